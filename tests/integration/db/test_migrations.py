"""Migrations create the schema on SQLite and PostgreSQL and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from db.migrate import current_revision, downgrade, head_revision, upgrade
from db.models import Base
from db.session import make_engine

TABLES = {"scans", "predictions", "model_versions", "training_runs", "locks", "duplicates"}


def test_upgrade_creates_every_table_and_the_results_view(migrated_engine: Engine) -> None:
    inspector = inspect(migrated_engine)
    assert set(inspector.get_table_names()) >= TABLES
    assert "scan_results" in inspector.get_view_names()
    assert current_revision(migrated_engine) == head_revision()


def test_models_and_migrations_do_not_drift(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models differ from migrations; write a new revision: {diff}"


def test_upgrade_is_idempotent_and_downgrade_removes_everything(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        upgrade(engine)
        downgrade(engine, "base")
        remaining = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert remaining == set()
        assert inspect(engine).get_view_names() == []
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
