"""The Celery task is a thin, JSON-returning wrapper around `trainer.nightly.run_training`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer import tasks


def test_the_task_has_the_name_beat_sends_and_never_acks_late() -> None:
    assert tasks.retrain.name == "cxr.retrain"
    # A run may outlast the broker's visibility timeout; a late ack would redeliver it.
    assert tasks.retrain.acks_late is False


def test_the_task_passes_trigger_and_force_and_returns_the_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(settings: object, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"status": "skipped", "run_id": 1}

    monkeypatch.setenv("CXR_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setattr(tasks, "run_training", fake_run)
    assert tasks.retrain.run(trigger="nightly") == {"status": "skipped", "run_id": 1}
    assert calls == [{"trigger": "nightly", "force": False}]


def test_a_configuration_problem_is_a_failed_result_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CXR_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.delenv("CXR_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    outcome = tasks.retrain.run()
    assert outcome["status"] == "failed"
    assert "CXR_DATA_DIR is not set" in outcome["error"]
