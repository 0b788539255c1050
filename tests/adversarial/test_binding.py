"""Items 1-4 and 9: a scan row, its bytes and its files stay bound (in-process, real files,
SQLite and PostgreSQL). The end-to-end versions through real processes are in
test_trust_end_to_end.py."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import scans as scans_module
from db.models import Prediction, Scan, ScanStatus
from db.scans import record_scan
from db.session import session_scope
from tests.invariants import assert_invariants, tree_digest
from worker import confined
from worker import screening as screening_module
from worker.confined import FileIdentity, Placement, file_away
from worker.filing import Filing
from worker.screening import ScreeningContext, screen_batch

KEY = b"adversarial-test-pseudonym-key-0123"


@pytest.fixture
def jpegs(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:3]


def _record(factory: sessionmaker[Session], path: Path) -> int:
    data = path.read_bytes()
    with session_scope(factory) as session:
        scan, _ = record_scan(
            session,
            sha256=hashlib.sha256(data).hexdigest(),
            source_path=str(path),
            size_bytes=len(data),
        )
        return scan.id


def _scan(factory: sessionmaker[Session], scan_id: int) -> Scan:
    with factory() as session:
        scan = session.get(Scan, scan_id)
        assert scan is not None
        session.expunge(scan)
        return scan


def _predictions(factory: sessionmaker[Session], scan_id: int) -> list[Prediction]:
    with factory() as session:
        return list(session.scalars(select(Prediction).where(Prediction.scan_id == scan_id)))


def test_item1_content_swapped_before_screening_gets_no_verdict(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    filing: Filing,
    jpegs: list[Path],
) -> None:
    """A's row, B's bytes at A's path (rewritten in place): no prediction for A, B kept."""
    path = filing.inbox / "x.jpeg"
    shutil.copyfile(jpegs[0], path)
    scan_a = _record(session_factory, path)
    with path.open("r+b") as handle:  # an in-place rewrite by a sender
        handle.truncate(0)
        handle.write(jpegs[1].read_bytes())
    scan_b = _record(session_factory, path)  # what the watcher does with the new content

    report = screen_batch(context, [scan_a, scan_b])

    a, b = _scan(session_factory, scan_a), _scan(session_factory, scan_b)
    assert a.status is ScanStatus.FAILED
    assert a.error_code == "content_changed"
    assert "overwritten or replaced" in (a.error or "")
    assert _predictions(session_factory, scan_a) == [], "no verdict on other bytes"
    assert b.status is ScanStatus.DONE
    assert report.done == [scan_b]
    assert b.stored_path is not None
    assert hashlib.sha256(Path(b.stored_path).read_bytes()).hexdigest() == b.sha256
    assert_invariants(
        session_factory, filing, dropped=[jpegs[1].read_bytes()], allow_unkept={a.sha256}
    )


def test_item1_a_file_replaced_after_hashing_is_not_moved_over_the_kept_copy(
    tmp_path: Path, jpegs: list[Path]
) -> None:
    """The mover never deletes a source whose bytes differ from the copy it kept."""
    inbox, archive = tmp_path / "inbox", tmp_path / "archive"
    inbox.mkdir()
    source = inbox / "a.jpeg"
    shutil.copyfile(jpegs[0], source)
    sha, identity = confined.hash_file(inbox, source)
    replacement = inbox / ".new"
    shutil.copyfile(jpegs[1], replacement)
    replacement.replace(source)  # swapped between the hash and the move

    with pytest.raises(confined.ContentMismatch):
        file_away(
            Placement(inbox, source),
            Placement(archive, archive / "kept.jpeg"),
            sha256=sha,
            identity=identity,
        )
    assert source.read_bytes() == jpegs[1].read_bytes(), "the new content stays for the watcher"
    assert not (archive / "kept.jpeg").exists()


def test_item1_an_occupied_target_with_other_bytes_is_never_overwritten(
    tmp_path: Path, jpegs: list[Path]
) -> None:
    inbox, archive = tmp_path / "inbox", tmp_path / "archive"
    inbox.mkdir()
    archive.mkdir()
    source = inbox / "a.jpeg"
    shutil.copyfile(jpegs[0], source)
    occupied = archive / "same-name.jpeg"
    shutil.copyfile(jpegs[1], occupied)
    sha, identity = confined.hash_file(inbox, source)

    kept = file_away(
        Placement(inbox, source), Placement(archive, occupied), sha256=sha, identity=identity
    )

    assert kept != occupied
    assert occupied.read_bytes() == jpegs[1].read_bytes()
    assert kept.read_bytes() == jpegs[0].read_bytes()
    assert not source.exists()


def test_item2_a_folder_swapped_for_a_symlink_after_intake_is_never_followed(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    filing: Filing,
    jpegs: list[Path],
    tmp_path: Path,
) -> None:
    study = filing.inbox / "study"
    study.mkdir()
    shutil.copyfile(jpegs[0], study / "model.keras")
    scan_id = _record(session_factory, study / "model.keras")
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.copyfile(jpegs[0], victim / "model.keras")  # same bytes: the hash cannot tell
    before = tree_digest(victim)
    stash = tmp_path / "stash"
    study.rename(stash)  # the real folder moves away; a link to the victim takes its place
    study.symlink_to(victim, target_is_directory=True)

    screen_batch(context, [scan_id])

    scan = _scan(session_factory, scan_id)
    assert scan.status is ScanStatus.FAILED
    assert scan.error_code == "outside_folders"
    assert tree_digest(victim) == before, (
        "nothing outside the inbox was read into a verdict or moved"
    )
    assert _predictions(session_factory, scan_id) == []
    assert not filing.quarantine.exists() or not any(filing.quarantine.rglob("*"))


def test_item3_a_retry_finds_the_file_where_the_interrupted_attempt_put_it(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    filing: Filing,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database fails between the quarantine move and its commit; the retry finds it."""
    hip = filing.inbox / "hip.dcm"
    shutil.copyfile(shared_data / "dicom" / "cr_hip_jpeg_lossless.dcm", hip)
    scan_id = _record(session_factory, hip)
    real = scans_module.mark_unscreenable
    calls = {"n": 0}

    def outage_once(session: Session, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            from sqlalchemy.exc import OperationalError

            raise OperationalError("UPDATE scans", {}, Exception("server closed the connection"))
        real(session, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(screening_module, "mark_unscreenable", outage_once)
    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError):
        screen_batch(context, [scan_id])
    assert not hip.exists(), "the interrupted attempt had moved it to the quarantine"
    screen_batch(context, [scan_id])  # the task's retry

    scan = _scan(session_factory, scan_id)
    assert scan.status is ScanStatus.REJECTED
    assert scan.error_code == "not_a_chest", scan.error
    assert scan.stored_path is not None
    assert Path(scan.stored_path).exists()
    assert scan.attempts == 1, "the outage spent no attempt"
    assert_invariants(
        session_factory,
        filing,
        dropped=[(shared_data / "dicom" / "cr_hip_jpeg_lossless.dcm").read_bytes()],
    )


def test_item4_a_move_across_file_systems_is_durable_before_the_source_goes(
    jpegs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archive on another mount (/dev/shm is a tmpfs): copy fsynced, folder fsynced, then unlink."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's tmp folder")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = inbox / "a.jpeg"
    shutil.copyfile(jpegs[0], source)
    archive = Path(shm / f"cxr-test-{os.getpid()}-{tmp_path.name}")
    events: list[str] = []
    real_fsync, real_unlink = os.fsync, os.unlink

    def fsync(fd: int) -> None:
        link = Path(f"/proc/self/fd/{fd}")
        kind = "folder" if link.is_dir() else "file"
        target = str(link.readlink())
        events.append(f"fsync {kind} {'archive' if str(archive) in target else 'inbox'}")
        real_fsync(fd)

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        events.append(f"unlink {path if str(path).startswith('.cxr-') else 'source'}")
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(confined.os, "fsync", fsync)
    monkeypatch.setattr(confined.os, "unlink", unlink)
    try:
        sha, identity = confined.hash_file(inbox, source)
        kept = file_away(
            Placement(inbox, source),
            Placement(archive, archive / "2026" / "a.jpeg"),
            sha256=sha,
            identity=identity,
        )
        assert kept.read_bytes() == jpegs[0].read_bytes()
        assert not source.exists()
        source_unlinked = events.index("unlink source")
        assert "fsync file archive" in events[:source_unlinked], events
        assert "fsync folder archive" in events[:source_unlinked], events
        assert oct(kept.stat().st_mode & 0o777) == oct(confined.FILE_MODE)
    finally:
        shutil.rmtree(archive, ignore_errors=True)


def test_item9_a_broken_file_with_a_255_byte_name_is_quarantined_and_its_batch_goes_on(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    filing: Filing,
    jpegs: list[Path],
) -> None:
    long_name = "b" * 244 + ".jpeg"  # legal: 249 bytes
    broken = filing.inbox / long_name
    broken.write_bytes(jpegs[0].read_bytes()[:3000])
    good = filing.inbox / "good.jpeg"
    shutil.copyfile(jpegs[1], good)
    ids = [_record(session_factory, broken), _record(session_factory, good)]

    report = screen_batch(context, ids)

    assert report.failed == [ids[0]]
    assert report.done == [ids[1]]
    scan = _scan(session_factory, ids[0])
    assert scan.status is ScanStatus.FAILED
    assert scan.stored_path is not None
    kept = Path(scan.stored_path)
    assert kept.exists()
    assert len(kept.name.encode()) <= 255
    assert (kept.parent / (kept.name + ".reason.json")).exists()
    assert oct(kept.stat().st_mode & 0o777) == oct(confined.FILE_MODE)


def test_item9_a_name_the_file_system_refuses_fails_that_scan_alone(
    context: ScreeningContext,
    session_factory: sessionmaker[Session],
    filing: Filing,
    jpegs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A per-file filing error (not an outage) ends that scan `failed`; the rest is screened."""
    bad, good = filing.inbox / "bad.jpeg", filing.inbox / "good.jpeg"
    shutil.copyfile(jpegs[0], bad)
    shutil.copyfile(jpegs[1], good)
    ids = [_record(session_factory, bad), _record(session_factory, good)]
    real = screening_module.file_away

    def refuse_bad(source: Placement, target: Placement, **kwargs: object) -> Path:
        if source.path.name == "bad.jpeg":
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(target.path))
        return real(source, target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(screening_module, "file_away", refuse_bad)
    report = screen_batch(context, ids)

    assert report.done == [ids[1]]
    scan = _scan(session_factory, ids[0])
    assert scan.status is ScanStatus.FAILED
    assert scan.error_code == "filing_failed"
    assert bad.exists(), "left where it is, not lost"
    assert _predictions(session_factory, ids[0]) == []


def test_identity_sees_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    identity = FileIdentity.of(path.stat())
    path.write_bytes(b"two")
    assert not identity.same_content_as(path.stat()) or FileIdentity.of(path.stat()) != identity
