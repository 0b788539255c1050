"""Duplicates: files that arrived again with content already recorded.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "duplicates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("scan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("stored_path", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["scan_id"], ["scans.id"], name=op.f("fk_duplicates_scan_id_scans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duplicates")),
    )
    with op.batch_alter_table("duplicates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_duplicates_scan_id"), ["scan_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("duplicates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_duplicates_scan_id"))

    op.drop_table("duplicates")
