"""One active model at most: a partial unique index on model_versions.status = 'active'.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "uq_model_versions_one_active"
WHERE = sa.text("status = 'active'")
# A frozen copy of the columns this revision touches (a migration must not change when
# the models do).
_MODELS = sa.table(
    "model_versions",
    sa.column("id", sa.BigInteger),
    sa.column("status", sa.String(16)),
    sa.column("promoted_at", sa.DateTime(timezone=True)),
    sa.column("retired_at", sa.DateTime(timezone=True)),
)


def _retire_all_but_the_newest_active() -> None:
    # Nothing stopped two active rows before this revision: keep the one promoted last
    # (the one get_active_model serves) and retire the others, or the index below could
    # not be created.
    bind = op.get_bind()
    active = (
        bind.execute(
            sa.select(_MODELS.c.id)
            .where(_MODELS.c.status == "active")
            .order_by(
                _MODELS.c.promoted_at.is_(None), _MODELS.c.promoted_at.desc(), _MODELS.c.id.desc()
            )
        )
        .scalars()
        .all()
    )
    if len(active) > 1:
        bind.execute(
            sa.update(_MODELS)
            .where(_MODELS.c.id.in_(active[1:]))
            .values(status="retired", retired_at=datetime.now(UTC))
        )


def upgrade() -> None:
    _retire_all_but_the_newest_active()
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
    # Models retired by the upgrade stay retired: which of them was meant to serve is
    # not known any more than it was before.
    op.drop_index(INDEX, table_name="model_versions")
