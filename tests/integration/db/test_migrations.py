"""Migrations create the schema on SQLite and PostgreSQL and match the models exactly."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from db.migrate import current_revision, downgrade, head_revision, upgrade
from db.models import Base, ModelStatus, ModelVersion
from db.session import make_engine, make_session_factory, session_scope

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


def _model(version: str, promoted_at: datetime) -> ModelVersion:
    return ModelVersion(
        version=version,
        artifact_path=f"/models/{version}/model.keras",
        checksum="0" * 64,
        backbone="tiny",
        classes=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        input_size=32,
        threshold=0.5,
        metrics={},
        status=ModelStatus.ACTIVE,
        promoted_at=promoted_at,
    )


def test_revision_0005_keeps_the_newest_of_two_active_models_and_round_trips(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    index = "uq_model_versions_one_active"
    try:
        upgrade(engine, "0004")  # before the index: nothing stopped two active rows
        with session_scope(factory) as session:
            session.add_all(
                [
                    _model("older", datetime(2026, 1, 1, tzinfo=UTC)),
                    _model("newer", datetime(2026, 2, 1, tzinfo=UTC)),
                ]
            )
        upgrade(engine)
        with factory() as session:
            rows = session.execute(select(ModelVersion.version, ModelVersion.status))
            status = dict(rows.all())
            retired = session.scalars(
                select(ModelVersion).where(ModelVersion.version == "older")
            ).one()
        assert status == {"older": ModelStatus.RETIRED, "newer": ModelStatus.ACTIVE}
        assert retired.retired_at is not None
        assert index in {i["name"] for i in inspect(engine).get_indexes("model_versions")}

        downgrade(engine, "0004")
        assert index not in {i["name"] for i in inspect(engine).get_indexes("model_versions")}
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
