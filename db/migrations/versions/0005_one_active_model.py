"""One active model at most: a partial unique index on model_versions.status = 'active'.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "uq_model_versions_one_active"
WHERE = sa.text("status = 'active'")


def upgrade() -> None:
    # PostgreSQL and SQLite both have partial indexes; the database, not only the
    # promotion code, then refuses a second active model.
    op.create_index(
        INDEX,
        "model_versions",
        ["status"],
        unique=True,
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="model_versions")
