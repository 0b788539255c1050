"""Item 11: outages spend no attempt, and retries are capped and bounded.

Item 10 (names that are not UTF-8) is tested with the watcher's fixtures in
tests/integration/watcher/test_hostile_names.py."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Scan
from db.scans import claim_scans, record_scan, release_scans
from db.session import session_scope
from worker import tasks
from worker.screening import ScreeningContext, screen_batch


def test_item11_a_database_outage_mid_batch_spends_no_attempt(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jpegs = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:3]
    ids = []
    with session_scope(session_factory) as session:
        for source in jpegs:
            path = Path(shutil.copy(source, tmp_path / "inbox" / source.name))
            data = path.read_bytes()
            scan, _ = record_scan(
                session,
                sha256=hashlib.sha256(data).hexdigest(),
                source_path=str(path),
                size_bytes=len(data),
            )
            ids.append(scan.id)
    from worker import screening

    real = screening.store_predictions
    outages = {"left": 2}

    def down_twice(session: Session, **kwargs: object) -> int:
        if outages["left"]:
            outages["left"] -= 1
            raise OperationalError("INSERT", {}, Exception("the database system is shutting down"))
        return real(session, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(screening, "store_predictions", down_twice)
    for _ in range(2):  # the task's retries, on the same worker
        with pytest.raises(OperationalError):
            screen_batch(context, ids)
    report = screen_batch(context, ids)

    assert sorted(report.done) == ids
    with session_factory() as session:
        attempts = [session.get(Scan, i).attempts for i in ids]  # type: ignore[union-attr]
    assert attempts == [1, 1, 1], "only a lost claim counts as an attempt"


def test_item11_a_claim_released_and_taken_again_counts_once(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        scan, _ = record_scan(session, sha256="a" * 64, source_path="/x", size_bytes=1)
    with session_scope(session_factory) as session:
        claim_scans(session, scan_ids=[scan.id], worker="w:1")
        claim_scans(session, scan_ids=[scan.id], worker="w:1")  # its own retry
    with session_factory() as session:
        assert session.get(Scan, scan.id).attempts == 1  # type: ignore[union-attr]
    with session_scope(session_factory) as session:
        release_scans(session, scan_ids=[scan.id], worker="w:1")
        claim_scans(session, scan_ids=[scan.id], worker="w:2")
    with session_factory() as session:
        assert session.get(Scan, scan.id).attempts == 1  # type: ignore[union-attr]


def test_item11_retries_resume_within_seconds_and_are_bounded() -> None:
    delays = [tasks.retry_delay(n) for n in range(tasks.SCREEN_MAX_RETRIES)]
    assert max(delays) <= tasks.RETRY_MAX_S, "after an outage work resumes within 10 s"
    assert tasks.screen_batch_task.max_retries == tasks.SCREEN_MAX_RETRIES
    assert sum(d / 0.5 for d in delays) > 120, "yet a short outage is ridden out"


def test_item11_a_periodic_task_during_an_outage_logs_one_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A PostgreSQL that is not there: the port of nothing.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXR_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    monkeypatch.setenv("CXR_PSEUDONYM_KEY", "adversarial-test-pseudonym-key-0123")
    from worker import runtime

    monkeypatch.setattr(runtime, "_context", {})
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    result = tasks.reconcile_task.apply().get()
    assert result == {"skipped": "database unavailable"}
    warnings = [r for r in caplog.records if r.name == "worker.tasks"]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None, "no traceback"
    assert "reconcile skipped: database unavailable" in warnings[0].getMessage()
    assert time.monotonic() - started < 30
