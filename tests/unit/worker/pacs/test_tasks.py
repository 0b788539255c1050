"""The report sender's Celery task: registered under the name the scheduler sends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.celery_app import create_app
from worker.settings import load_settings


def test_the_sender_task_is_registered_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("CXR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    app = create_app(load_settings(), include=("worker.pacs.tasks",))
    app.loader.import_default_modules()
    from worker.pacs.tasks import SEND_REPORTS_TASK

    assert SEND_REPORTS_TASK == "cxr.send_reports"
    assert SEND_REPORTS_TASK in app.tasks
