"""A file is handed over once complete: stable for a while, or closed / renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

from worker.watcher.stability import PendingFiles, Signature


class Clock:
    """A clock the test moves by hand; files are real."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _ready(pending: PendingFiles) -> list[Path]:
    return [c.path for c in pending.ready()]


def test_a_file_is_ready_only_after_it_stopped_changing_for_stable_seconds(
    tmp_path: Path,
) -> None:
    clock = Clock()
    pending = PendingFiles(stable_seconds=2.0, clock=clock)
    scan = tmp_path / "a.dcm"
    scan.write_bytes(b"first chunk")
    pending.observe(scan)

    clock.advance(1.5)
    assert _ready(pending) == []
    with scan.open("ab") as handle:  # a writer without events (a network share)
        handle.write(b" second chunk")
    clock.advance(0.6)
    assert _ready(pending) == [], "size changed: the wait starts again"
    clock.advance(1.9)
    assert _ready(pending) == []
    clock.advance(0.2)
    assert _ready(pending) == [scan]
    assert _ready(pending) == [], "handed over once"


def test_a_close_or_rename_hint_makes_a_file_ready_at_once(tmp_path: Path) -> None:
    clock = Clock()
    pending = PendingFiles(stable_seconds=2.0, clock=clock)
    scan = tmp_path / "a.dcm"
    scan.write_bytes(b"complete")
    pending.observe(scan)
    pending.observe(scan, complete=True)
    assert _ready(pending) == [scan]


def test_a_change_after_the_close_hint_takes_the_hint_back(tmp_path: Path) -> None:
    clock = Clock()
    pending = PendingFiles(stable_seconds=2.0, clock=clock)
    scan = tmp_path / "a.dcm"
    scan.write_bytes(b"part one")
    pending.observe(scan, complete=True)
    pending.observe(scan)  # reopened and written to before we looked
    assert _ready(pending) == []
    clock.advance(2.0)
    assert _ready(pending) == [scan]


def test_a_taken_version_is_not_handed_over_again_but_a_new_version_is(tmp_path: Path) -> None:
    clock = Clock()
    pending = PendingFiles(stable_seconds=1.0, clock=clock)
    scan = tmp_path / "a.dcm"
    scan.write_bytes(b"v1")
    pending.observe(scan, complete=True)
    [candidate] = pending.ready()
    pending.mark_taken(scan, Signature.of(candidate.status))

    pending.seen(scan, scan.lstat())  # a rescan of the inbox
    pending.observe(scan)  # an attribute event
    clock.advance(1.0)
    assert _ready(pending) == []

    replacement = tmp_path / "new"
    replacement.write_bytes(b"v2, longer")
    replacement.replace(scan)
    pending.seen(scan, scan.lstat())
    clock.advance(1.0)
    assert _ready(pending) == [scan]


def test_a_vanished_file_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    pending = PendingFiles(stable_seconds=0.5, clock=clock)
    scan = tmp_path / "a.dcm"
    scan.write_bytes(b"x")
    pending.observe(scan)
    scan.unlink()
    clock.advance(1)
    assert _ready(pending) == []
    assert len(pending) == 0


def test_ready_files_come_oldest_first_and_next_due_says_when_to_look(tmp_path: Path) -> None:
    clock = Clock()
    pending = PendingFiles(stable_seconds=1.0, clock=clock)
    first, second = tmp_path / "1.dcm", tmp_path / "2.dcm"
    first.write_bytes(b"1")
    second.write_bytes(b"2")
    pending.observe(second)
    assert pending.next_due() == clock.now + 1.0
    clock.advance(0.5)
    pending.observe(first)
    clock.advance(0.1)
    pending.observe(second, complete=False)  # second changed again: now the younger one
    clock.advance(2)
    assert _ready(pending) == [first, second]
    assert pending.next_due() is None


def test_forget_under_a_folder_and_retry_later(tmp_path: Path) -> None:
    clock = Clock()
    pending = PendingFiles(stable_seconds=1.0, clock=clock)
    study = tmp_path / "STUDY"
    study.mkdir()
    inside, outside = study / "a.dcm", tmp_path / "b.dcm"
    for path in (inside, outside):
        path.write_bytes(os.urandom(8))
        pending.observe(path)
    pending.forget_under(study)
    assert inside not in pending
    assert outside in pending

    pending.retry_later(outside, 5.0)
    clock.advance(4.9)
    assert _ready(pending) == []
    clock.advance(0.1)
    assert _ready(pending) == [outside]
