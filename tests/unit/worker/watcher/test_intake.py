"""One complete file: recorded once, or set aside as a duplicate or a rejection (real databases)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.intake import record_duplicate, record_rejected_file
from db.models import Duplicate, Scan, ScanStatus
from db.session import session_scope
from worker.confined import FileIdentity, Placement, file_away
from worker.watcher import intake as intake_module
from worker.watcher.intake import Folders, Intake, NotAFile, Outcome


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    found = Folders(tmp_path / "inbox", tmp_path / "archive", tmp_path / "quarantine")
    found.inbox.mkdir()
    return found


@pytest.fixture
def intake(folders: Folders, session_factory: sessionmaker[Session]) -> Intake:
    return Intake(folders=folders, session_factory=session_factory, max_file_bytes=64 * 1024)


def _drop(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _scans(factory: sessionmaker[Session]) -> list[Scan]:
    with factory() as session:
        return list(session.scalars(select(Scan).order_by(Scan.id)))


def _duplicates(factory: sessionmaker[Session]) -> list[Duplicate]:
    with factory() as session:
        return list(session.scalars(select(Duplicate).order_by(Duplicate.id)))


def test_a_new_file_becomes_one_queued_scan_and_taking_it_again_changes_nothing(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    content = os.urandom(3000)
    path = _drop(folders.inbox, "STUDY/SERIES/IM1.dcm", content)

    first = intake.take(path)
    again = intake.take(path)  # a restart's walk, or a second event

    assert first.outcome is Outcome.ACCEPTED
    assert again.outcome is Outcome.RECORDED_BEFORE
    assert again.scan_id == first.scan_id
    [scan] = _scans(session_factory)
    assert scan.sha256 == hashlib.sha256(content).hexdigest()
    assert (scan.source_path, scan.stored_path) == (str(path), str(path))
    assert scan.status is ScanStatus.QUEUED
    assert scan.queued_at is None, "the batcher stamps it once sent"
    assert _duplicates(session_factory) == []
    assert path.exists(), "the worker files it away after screening"


def test_a_copy_under_another_name_is_a_duplicate_kept_in_the_archive(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    content = os.urandom(2000)
    original = _drop(folders.inbox, "a.dcm", content)
    copies = [_drop(folders.inbox, "b.dcm", content), _drop(folders.inbox, "x/b.dcm", content)]
    scan_id = intake.take(original).scan_id

    results = [intake.take(copy) for copy in copies]

    assert [r.outcome for r in results] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert {r.scan_id for r in results} == {scan_id}
    assert len(_scans(session_factory)) == 1
    duplicates = _duplicates(session_factory)
    assert [d.source_path for d in duplicates] == [str(c) for c in copies]
    kept = [Path(str(d.stored_path)) for d in duplicates]
    assert len(set(kept)) == 2, "same name twice in a day: numbered, never overwritten"
    assert all(k.is_relative_to(folders.archive / "duplicates") for k in kept)
    assert [k.read_bytes() for k in kept] == [content, content]
    assert not any(c.exists() for c in copies)
    assert original.exists()


def test_a_file_dropped_again_after_it_was_screened_is_a_duplicate(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    content = os.urandom(1000)
    path = _drop(folders.inbox, "a.dcm", content)
    scan_id = intake.take(path).scan_id
    archived = folders.archive / "2026" / "a.dcm"
    archived.parent.mkdir(parents=True)
    path.rename(archived)  # what the screening worker does, then records it
    with session_scope(session_factory) as session:
        session.execute(
            update(Scan)
            .where(Scan.id == scan_id)
            .values(status=ScanStatus.DONE, stored_path=str(archived))
        )

    result = intake.take(_drop(folders.inbox, "a.dcm", content))

    assert result.outcome is Outcome.DUPLICATE
    assert result.scan_id == scan_id
    assert len(_duplicates(session_factory)) == 1


def test_a_queued_file_moved_inside_the_inbox_is_the_same_scan(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    path = _drop(folders.inbox, "a.dcm", os.urandom(500))
    scan_id = intake.take(path).scan_id
    moved = folders.inbox / "sorted" / "a.dcm"
    moved.parent.mkdir()
    path.rename(moved)

    result = intake.take(moved)

    assert result.outcome is Outcome.RELOCATED
    [scan] = _scans(session_factory)
    assert (scan.id, scan.stored_path) == (scan_id, str(moved))
    assert _duplicates(session_factory) == []


def test_a_file_over_the_cap_is_rejected_quarantined_with_its_reason_and_never_queued(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    content = os.urandom(100 * 1024)
    path = _drop(folders.inbox, "huge.dcm", content)

    result = intake.take(path)

    assert result.outcome is Outcome.REJECTED
    [scan] = _scans(session_factory)
    assert scan.status is ScanStatus.REJECTED
    assert scan.error_code == "too_large"
    assert scan.error is not None
    assert "over the cap of 64.0 KB" in scan.error
    assert "CXR_MAX_FILE_MB" in scan.error
    assert scan.finished_at is not None
    kept = Path(str(scan.stored_path))
    assert kept.is_relative_to(folders.quarantine)
    assert kept.read_bytes() == content
    reason = json.loads(Path(f"{kept}.reason.json").read_text())
    assert reason["code"] == "too_large"
    assert reason["source_path"] == str(path)
    assert not path.exists()


def test_a_rejection_interrupted_before_its_move_is_finished_not_recorded_twice(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    content = os.urandom(70 * 1024)
    path = _drop(folders.inbox, "huge.dcm", content)
    with session_scope(session_factory) as session:  # the crash came right after this commit
        record_rejected_file(
            session,
            sha256=hashlib.sha256(content).hexdigest(),
            source_path=str(path),
            size_bytes=len(content),
            code="too_large",
            error="over the cap",
        )

    result = intake.take(path)

    assert result.outcome is Outcome.REJECTED
    [scan] = _scans(session_factory)
    assert Path(str(scan.stored_path)).is_relative_to(folders.quarantine)
    assert not path.exists()


def test_a_duplicate_recorded_but_not_moved_before_a_crash_is_finished_once(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    content = os.urandom(900)
    scan_id = intake.take(_drop(folders.inbox, "a.dcm", content)).scan_id
    assert scan_id is not None
    copy = _drop(folders.inbox, "copy.dcm", content)
    planned = folders.archive / "duplicates" / "planned_copy.dcm"
    with session_scope(session_factory) as session:
        record_duplicate(
            session,
            scan_id=scan_id,
            source_path=str(copy),
            stored_path=str(planned),
            size_bytes=len(content),
        )

    result = intake.take(copy)

    assert result.outcome is Outcome.DUPLICATE
    [duplicate] = _duplicates(session_factory)
    assert duplicate.stored_path == str(planned)
    assert planned.read_bytes() == content


def test_an_empty_file_waits_for_content(
    intake: Intake, folders: Folders, session_factory: sessionmaker[Session]
) -> None:
    result = intake.take(_drop(folders.inbox, "a.dcm", b""))
    assert result.outcome is Outcome.EMPTY
    assert _scans(session_factory) == []


def test_a_symlink_is_never_opened(intake: Intake, folders: Folders, tmp_path: Path) -> None:
    outside = _drop(tmp_path, "secret.dcm", b"outside the inbox")
    link = folders.inbox / "link.dcm"
    link.symlink_to(outside)
    with pytest.raises(NotAFile, match="symlink"):
        intake.take(link)
    assert outside.exists()


def test_a_copy_that_vanishes_before_its_move_leaves_no_duplicate_record(
    intake: Intake,
    folders: Folders,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = os.urandom(700)
    intake.take(_drop(folders.inbox, "a.dcm", content))
    copy = _drop(folders.inbox, "copy.dcm", content)

    def worker_got_there_first(
        source: Placement, destination: Placement, *, sha256: str, identity: FileIdentity
    ) -> Path:
        source.path.unlink()  # the race: archived by a worker between the hash and the move
        return file_away(source, destination, sha256=sha256, identity=identity)

    monkeypatch.setattr(intake_module, "file_away", worker_got_there_first)
    with pytest.raises(FileNotFoundError):
        intake.take(copy)
    assert _duplicates(session_factory) == []
