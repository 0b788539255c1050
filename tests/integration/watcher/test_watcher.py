"""A live watcher (real observer thread) on real files: each scan recorded and queued once."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from db.models import Scan, ScanStatus
from db.scans import record_scan
from db.session import session_scope
from tests.integration.watcher.conftest import Running, Stack, running
from tests.processes import wait_until
from worker.watcher.intake import Intake, IntakeResult


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _wait_scans(stack: Stack, count: int, timeout: float = 30) -> list[Scan]:
    wait_until(lambda: len(stack.scans()) >= count, timeout=timeout, what=f"{count} scans")
    return stack.scans()


def _wait_sent(stack: Stack, count: int, timeout: float = 30) -> list[list[int]]:
    wait_until(
        lambda: sum(len(b) for b in stack.batches()) >= count,
        timeout=timeout,
        what=f"{count} scan ids on the broker",
    )
    return stack.batches()


def _still_works(stack: Stack, live: Running) -> None:
    """The watcher is alive and takes the next ordinary file."""
    live.assert_alive()
    before = len(stack.scans())
    _write(stack.inbox / f"after-{time.monotonic_ns()}.dcm", os.urandom(256))
    _wait_scans(stack, before + 1)
    live.assert_alive()


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_a_file_written_slowly_in_chunks_is_taken_once_after_the_last_chunk(
    embedded: Stack, polling: bool
) -> None:
    chunks = [os.urandom(40_000) for _ in range(5)]
    target = embedded.inbox / "STUDY" / "SERIES" / "IM0001.dcm"
    target.parent.mkdir(parents=True)
    with running(embedded, stable_seconds=1.0, watch_polling=polling) as live:
        # One writer keeps the file open and pauses between chunks, like a slow copy
        # from a modality: every pause is shorter than stable_seconds.
        with target.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
                assert embedded.scans() == [], "taken before the writer finished"
                time.sleep(0.6)
            finished = time.time()
        [scan] = _wait_scans(embedded, 1)
        time.sleep(1.5)  # nothing else happens to it later
        _still_works(embedded, live)
    scans = embedded.scans()
    assert scans[0].sha256 == _sha(b"".join(chunks))
    assert scans[0].size_bytes == 200_000
    assert scan.received_at.timestamp() >= finished - 0.05
    assert len(scans) == 2
    assert embedded.duplicates() == []


def test_temporary_and_hidden_names_are_taken_only_once_renamed_into_place(
    embedded: Stack,
) -> None:
    content = os.urandom(30_000)
    with running(embedded, stable_seconds=0.3) as live:
        partial = embedded.inbox / "chest.dcm.part"
        hidden = embedded.inbox / ".chest2.dcm.Xy12"  # rsync's temporary name
        for start in range(0, len(content), 10_000):  # closed and reopened each time
            with partial.open("ab") as handle:
                handle.write(content[start : start + 10_000])
            time.sleep(0.4)
        _write(hidden, content[::-1])
        time.sleep(1.0)
        assert embedded.scans() == [], "temporary names are left alone"
        partial.rename(embedded.inbox / "chest.dcm")
        hidden.rename(embedded.inbox / "chest2.dcm")
        scans = _wait_scans(embedded, 2)
        _still_works(embedded, live)
    assert {s.sha256 for s in scans} == {_sha(content), _sha(content[::-1])}


def test_a_burst_of_500_files_gives_500_scans_in_about_500_over_n_tasks(stack: Stack) -> None:
    batch_size = 16
    contents = [f"scan {i} ".encode() + os.urandom(200) for i in range(500)]
    with running(stack, batch_size=batch_size, batch_wait_ms=500) as live:
        for i, content in enumerate(contents):
            _write(stack.inbox / f"series{i // 100}" / f"IM{i:04d}.dcm", content)
        scans = _wait_scans(stack, 500, timeout=90)
        batches = _wait_sent(stack, 500)
        live.assert_alive()
    assert len(scans) == 500
    assert {s.sha256 for s in scans} == {_sha(c) for c in contents}
    ids = [scan_id for batch in batches for scan_id in batch]
    assert sorted(ids) == sorted(s.id for s in scans), "every scan sent exactly once"
    assert all(len(b) <= batch_size for b in batches)
    assert 32 <= len(batches) <= 36, f"{len(batches)} tasks for 500 scans in batches of 16"
    assert all(s.queued_at is not None for s in stack.scans())
    assert stack.duplicates() == []


def test_the_same_file_twice_and_a_copy_under_another_name_give_one_screening(
    embedded: Stack,
) -> None:
    content = os.urandom(5000)
    with running(embedded) as live:
        original = _write(embedded.inbox / "chest.dcm", content)
        [scan] = _wait_scans(embedded, 1)
        _write(original, content)  # the same file dropped again on top of itself
        copy = _write(embedded.inbox / "copy of chest.dcm", content)
        nested = _write(embedded.inbox / "STUDY" / "IM1.dcm", content)
        wait_until(lambda: len(embedded.duplicates()) == 2, timeout=20, what="two duplicates")

        # Once screened and archived, the same file dropped again is a duplicate too.
        archived = embedded.archive / "2026" / f"{scan.sha256}.dcm"
        archived.parent.mkdir(parents=True)
        original.rename(archived)
        with session_scope(embedded.factory) as session:
            session.execute(
                update(Scan)
                .where(Scan.id == scan.id)
                .values(status=ScanStatus.DONE, stored_path=str(archived))
            )
        _write(original, content)
        wait_until(lambda: len(embedded.duplicates()) == 3, timeout=20, what="a third duplicate")
        _still_works(embedded, live)
    assert len(embedded.scans()) == 2  # chest.dcm and the _still_works file
    sent = [i for batch in embedded.batches() for i in batch]
    assert sent.count(scan.id) == 1, "screened once"
    duplicates = embedded.duplicates()
    assert {d.scan_id for d in duplicates} == {scan.id}
    assert sorted(d.source_path for d in duplicates) == sorted(
        str(p) for p in (original, copy, nested)
    )
    kept = [Path(str(d.stored_path)) for d in duplicates]
    assert all(k.is_relative_to(embedded.archive / "duplicates") for k in kept)
    assert all(k.read_bytes() == content for k in kept), "never deleted"
    assert not original.exists()
    assert not copy.exists()


def test_a_symlink_to_a_file_outside_the_inbox_is_not_followed(
    embedded: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "elsewhere"
    secret = _write(outside / "secret.dcm", os.urandom(1000))
    _write(outside / "folder" / "other.dcm", os.urandom(1000))
    with running(embedded) as live:
        (embedded.inbox / "link.dcm").symlink_to(secret)
        (embedded.inbox / "linked-folder").symlink_to(outside / "folder")
        time.sleep(1.5)
        assert embedded.scans() == []
        assert "not following link.dcm: a symlink pointing outside the inbox" in caplog.text
        _still_works(embedded, live)
    assert secret.exists(), "the target is never moved"
    assert (outside / "folder" / "other.dcm").exists()
    assert len(embedded.scans()) == 1


def test_a_file_over_the_cap_is_rejected_with_its_reason_and_not_queued(
    embedded: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    content = os.urandom(150_000)
    with running(embedded, max_file_mb=0.1) as live:
        _write(embedded.inbox / "huge.dcm", content)
        [scan] = _wait_scans(embedded, 1)
        _still_works(embedded, live)
    rejected = next(s for s in embedded.scans() if s.id == scan.id)
    assert rejected.status is ScanStatus.REJECTED
    assert rejected.error_code == "too_large"
    assert rejected.error is not None
    assert "146.5 KB, over the cap of 102.4 KB" in rejected.error
    kept = Path(str(rejected.stored_path))
    assert kept.is_relative_to(embedded.quarantine)
    assert kept.read_bytes() == content
    reason = json.loads(Path(f"{kept}.reason.json").read_text())
    assert (reason["status"], reason["code"]) == ("rejected", "too_large")
    assert f"rejected scan {scan.id}: huge.dcm is 146.5 KB" in caplog.text
    sent = [i for batch in embedded.batches() for i in batch]
    assert scan.id not in sent


def test_an_error_on_one_file_is_logged_with_its_name_and_the_watcher_carries_on(
    embedded: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A share that fails to read one file (EIO). (A name that is not UTF-8 used to be
    # the example here; it is now taken under an escaped name: test_hostile_names.py.)
    real_take = Intake.take

    def failing(self: Intake, path: Path) -> IntakeResult:
        if path.name == "Röntgen.dcm":
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_take(self, path)

    monkeypatch.setattr(Intake, "take", failing)
    with running(embedded) as live:
        bad = _write(embedded.inbox / "Röntgen.dcm", b"x")
        wait_until(lambda: "could not take R" in caplog.text, timeout=10, what="the error log")
        _still_works(embedded, live)
    assert bad.exists()
    assert "Röntgen.dcm (attempt 1)" in caplog.text


def test_files_that_arrived_while_it_was_down_are_taken_on_start_once(embedded: Stack) -> None:
    earlier = _write(embedded.inbox / "earlier.dcm", b"recorded before the restart")
    with session_scope(embedded.factory) as session:  # still queued: no worker filed it yet
        record_scan(
            session,
            sha256=_sha(earlier.read_bytes()),
            source_path=str(earlier),
            size_bytes=earlier.stat().st_size,
        )
    waiting = [_write(embedded.inbox / "A" / "B" / f"{i}.dcm", os.urandom(100)) for i in range(20)]
    _write(embedded.inbox / "A" / "late.dcm.part", b"still being copied")
    with running(embedded) as live:
        _wait_scans(embedded, 21)
        time.sleep(1.0)
        live.assert_alive()
    scans = embedded.scans()
    assert len(scans) == 21
    assert {s.source_path for s in scans} == {str(p) for p in (earlier, *waiting)}
    assert embedded.duplicates() == []
    sent = [i for batch in embedded.batches() for i in batch]
    assert sorted(sent) == sorted(s.id for s in scans[1:]), (
        "only the new ones: the reconcile task resends a recorded, unsent scan"
    )


@pytest.mark.integration
def test_while_the_broker_is_down_rows_stay_queued_and_go_out_when_it_is_back(
    tmp_path: Path,
) -> None:
    from tests.integration.watcher.conftest import _stack

    with _stack("redis+postgresql", tmp_path) as stack:
        assert stack.redis is not None
        stack.redis.stop()
        with running(stack, batch_wait_ms=100) as live:
            files = [_write(stack.inbox / f"{i}.dcm", os.urandom(300)) for i in range(5)]
            scans = _wait_scans(stack, len(files))
            time.sleep(1.0)
            assert all(s.status is ScanStatus.QUEUED for s in scans)
            assert all(s.queued_at is None for s in stack.scans()), "nothing sent yet"
            _still_works(stack, live)
            stack.redis.start()  # same port: the watcher's retry finds it
            wait_until(
                lambda: all(s.queued_at is not None for s in stack.scans()),
                timeout=60,
                what="the retry to send every scan",
            )
        sent = sorted(i for batch in stack.batches() for i in batch)
        assert sent == sorted(s.id for s in stack.scans())


def test_a_folder_moved_into_the_inbox_is_taken_at_once(embedded: Stack, tmp_path: Path) -> None:
    staging = tmp_path / "staging" / "STUDY1"
    contents = [os.urandom(500) for _ in range(3)]
    for i, content in enumerate(contents):
        _write(staging / "SERIES" / f"{i}.dcm", content)
    with running(embedded, stable_seconds=30.0) as live:
        shutil.move(staging, embedded.inbox / "STUDY1")
        # Far sooner than stable_seconds: a rename into place means complete.
        scans = _wait_scans(embedded, 3, timeout=10)
        live.assert_alive()
    assert {s.sha256 for s in scans} == {_sha(c) for c in contents}
