"""`cxr-screen watch` as a process: SIGKILL mid-burst and restart, clean SIGTERM, bad setup."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import timedelta
from pathlib import Path

from db.scans import reconcile
from db.session import session_scope
from tests.cli_runner import run_cli
from tests.integration.watcher.conftest import Stack
from tests.processes import Service, wait_until


def test_killed_in_the_middle_of_a_burst_and_started_again_it_loses_and_duplicates_nothing(
    stack: Stack,
) -> None:
    env = stack.env()
    contents = [f"scan {i} ".encode() + bytes([i % 256]) * 300 for i in range(500)]
    paths = [stack.inbox / f"STUDY{i % 5}" / f"IM{i:04d}.dcm" for i in range(500)]
    for folder in {p.parent for p in paths}:
        folder.mkdir()

    def drop_all() -> None:
        for path, content in zip(paths, contents, strict=True):
            path.write_bytes(content)
            time.sleep(0.004)  # a fast export, not instantaneous

    first = Service(["watch"], cwd=stack.root, env=env, log=stack.root / "first.log")
    first.wait_for_log("watching ")
    writer = threading.Thread(target=drop_all)
    writer.start()
    wait_until(lambda: len(stack.scans()) >= 120, timeout=60, what="the burst to be under way")
    first.kill()
    taken_by_first = len(stack.scans())
    writer.join()
    assert 0 < taken_by_first < 500, "the kill must land in the middle of the burst"

    second = Service(["watch"], cwd=stack.root, env=env, log=stack.root / "second.log")
    try:
        second.wait_for_log("watching ")
        wait_until(lambda: len(stack.scans()) == 500, timeout=120, what="all 500 scans")
        time.sleep(1.0)  # the last partial batch goes out
    finally:
        assert second.stop() == 0, second.output()[-3000:]
    assert "watcher stopped" in second.output()

    scans = stack.scans()
    assert len(scans) == 500
    assert sorted(s.source_path for s in scans) == sorted(str(p) for p in paths)
    assert {s.sha256 for s in scans} == {hashlib.sha256(c).hexdigest() for c in contents}
    assert stack.duplicates() == [], "a restart is not a second arrival"
    assert "duplicate " not in second.output()

    sent = [scan_id for batch in stack.batches() for scan_id in batch]
    assert len(sent) == len(set(sent)), "no scan sent twice"
    # A scan recorded just before the kill but not sent is left to the reconcile task,
    # which sends every queued scan never stamped as sent: together they cover all.
    with session_scope(stack.factory) as session:
        pending = reconcile(
            session,
            claim_timeout=timedelta(hours=1),
            requeue_after=timedelta(hours=1),
            max_attempts=3,
        ).to_send
    assert set(sent) | set(pending) == {s.id for s in scans}
    assert len(pending) <= 16, f"at most the batch in flight at the kill, not {len(pending)}"


def test_an_archive_inside_the_inbox_is_refused_with_the_fix(
    embedded: Stack, tmp_path: Path
) -> None:
    env = embedded.env(archive=embedded.inbox / "archive")
    result = run_cli("watch", cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 2
    assert "CXR_ARCHIVE=" in result.stderr
    assert "is inside CXR_INBOX=" in result.stderr
    assert "put it beside the inbox" in result.stderr


def test_a_database_without_the_schema_is_refused_with_the_fix(
    embedded: Stack, tmp_path: Path
) -> None:
    env = embedded.env(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    result = run_cli("watch", cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 2
    assert "run `cxr-screen db upgrade` first" in result.stderr
