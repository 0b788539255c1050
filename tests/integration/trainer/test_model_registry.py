"""Data access of the registry: one active model, rollback order, run bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.models import ModelStatus, RunStatus
from db.session import session_scope


def _candidate(session: Session, version: str, **overrides: Any) -> None:
    values: dict[str, Any] = {
        "version": version,
        "artifact_path": f"/models/{version}/model.keras",
        "checksum": "0" * 64,
        "backbone": "vgg16",
        "classes": ["NORMAL", "PNEUMONIA"],
        "positive_class": "PNEUMONIA",
        "input_size": 224,
        "threshold": 0.6,
        "base_weights_sha256": "1" * 64,
        "data_fingerprint": "2" * 64,
        "metrics": {"auc": 0.99},
    }
    values.update(overrides)
    model_registry.add_candidate(session, **values)


def test_promotion_retires_the_previous_model_and_rollback_walks_back(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        for version in ("a", "b", "c"):
            _candidate(session, version)
        assert model_registry.get_active_model(session) is None
        assert model_registry.get_model(session, version="a").status is ModelStatus.CANDIDATE  # type: ignore[union-attr]
    for version in ("a", "b", "c"):
        with session_scope(session_factory) as session:
            model_registry.set_active(session, version=version, notes=f"promote {version}")
    with session_scope(session_factory) as session:
        statuses = {m.version: m.status for m in model_registry.list_models(session)}
        assert statuses == {"a": "retired", "b": "retired", "c": "active"}
        assert model_registry.previous_active(session).version == "b"  # type: ignore[union-attr]
        # Rolling back c: c is rejected, b active; the next rollback goes to a, not c.
        model_registry.reject(session, version="c", reason="rolled back")
        model_registry.set_active(session, version="b")
    with session_scope(session_factory) as session:
        assert model_registry.get_active_model(session).version == "b"  # type: ignore[union-attr]
        assert model_registry.previous_active(session).version == "a"  # type: ignore[union-attr]
        rejected = model_registry.require_model(session, version="c")
        assert rejected.retired_at is not None
        assert rejected.notes == "promote c\nrolled back"
    with (
        pytest.raises(model_registry.ModelNotFoundError),
        session_scope(session_factory) as session,
    ):
        model_registry.set_active(session, version="zzz")


def test_runs_record_status_duration_and_log(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        run_id = model_registry.start_run(session, trigger="nightly").id
    with session_scope(session_factory) as session:
        [running] = model_registry.list_runs(session)
        assert running.status is RunStatus.RUNNING
        assert running.finished_at is None
        model_registry.finish_run(
            session,
            run_id=run_id,
            status=RunStatus.SKIPPED,
            log="nothing to do",
            data_fingerprint="f" * 64,
        )
    with session_scope(session_factory) as session:
        [run] = model_registry.list_runs(session)
        assert run.status is RunStatus.SKIPPED
        assert run.duration_s is not None
        assert run.duration_s >= 0
        assert (run.log, run.data_fingerprint) == ("nothing to do", "f" * 64)
