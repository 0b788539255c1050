"""People who sign in to the web pages, and their reviews of screened scans.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# BigInteger on PostgreSQL, INTEGER (so that it autoincrements) on SQLite, as db.models.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "reader",
                "admin",
                name="user_role",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "reviews",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("scan_id", _BIG_ID, nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("reviewer_id", _BIG_ID, nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prediction_id", _BIG_ID, nullable=True),
        sa.Column("model_version_id", _BIG_ID, nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "probability IS NULL OR (probability >= 0 AND probability <= 1)",
            name=op.f("ck_reviews_probability_range"),
        ),
        sa.ForeignKeyConstraint(["scan_id"], ["scans.id"], name=op.f("fk_reviews_scan_id_scans")),
        sa.ForeignKeyConstraint(
            ["reviewer_id"], ["users.id"], name=op.f("fk_reviews_reviewer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["prediction_id"], ["predictions.id"], name=op.f("fk_reviews_prediction_id_predictions")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_reviews_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    op.create_index(
        "ix_reviews_scan_id_reviewed_at", "reviews", ["scan_id", "reviewed_at"], unique=False
    )
    op.create_index(op.f("ix_reviews_reviewer_id"), "reviews", ["reviewer_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_reviews_reviewer_id"), table_name="reviews")
    op.drop_index("ix_reviews_scan_id_reviewed_at", table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("users")
