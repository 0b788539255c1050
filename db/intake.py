"""Keyword-only data access for the watcher's front door: duplicates, rejections, moves."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.models import Duplicate, Scan, ScanStatus
from db.scans import record_scan
from db.types import utcnow


def record_rejected_file(
    session: Session, *, sha256: str, source_path: str, size_bytes: int, code: str, error: str
) -> tuple[Scan, bool]:
    """Record a file refused at the door (for example over the size cap) as `rejected`.

    The row is written while the file is still at `source_path`; the caller moves it to
    the quarantine and then calls `set_stored_path`, so a crash in between leaves a row
    that says where the file really is.

    Returns:
        The scan and True when it is new (False: that content was already recorded).
    """
    now = utcnow()
    return record_scan(
        session,
        sha256=sha256,
        source_path=source_path,
        size_bytes=size_bytes,
        status=ScanStatus.REJECTED,
        error_code=code,
        error=error,
        finished_at=now,
        received_at=now,
        updated_at=now,
    )


def set_stored_path(session: Session, *, scan_id: int, stored_path: str) -> None:
    """Note where a scan's file is kept now."""
    session.execute(
        update(Scan).where(Scan.id == scan_id).values(stored_path=stored_path, updated_at=utcnow())
    )


def relocate_queued_scan(session: Session, *, scan_id: int, old_path: str, new_path: str) -> bool:
    """Point a queued scan at its file's new place (someone moved it inside the inbox).

    Only while the scan is still `queued` and the row still names `old_path`: a worker
    that already claimed it, or a second watcher that got there first, wins.

    Returns:
        True when the row was changed.
    """
    changed = session.execute(
        update(Scan)
        .where(
            Scan.id == scan_id,
            Scan.status == ScanStatus.QUEUED,
            Scan.stored_path == old_path,
        )
        .values(stored_path=new_path, updated_at=utcnow())
        .returning(Scan.id)
    ).all()
    return bool(changed)


def record_duplicate(
    session: Session, *, scan_id: int, source_path: str, stored_path: str, size_bytes: int
) -> Duplicate:
    """Record a file whose content is already scan `scan_id`: kept, never screened again."""
    duplicate = Duplicate(
        scan_id=scan_id,
        source_path=source_path,
        stored_path=stored_path,
        size_bytes=size_bytes,
        received_at=utcnow(),
    )
    session.add(duplicate)
    session.flush()
    return duplicate


def duplicates_of(session: Session, *, scan_id: int, source_path: str) -> Sequence[Duplicate]:
    """Duplicates of `scan_id` that arrived at `source_path`, oldest first.

    The watcher uses them to finish a move that a crash interrupted, instead of
    recording the same arrival twice.
    """
    return session.scalars(
        select(Duplicate)
        .where(Duplicate.scan_id == scan_id, Duplicate.source_path == source_path)
        .order_by(Duplicate.id)
    ).all()


def delete_duplicate(session: Session, *, duplicate_id: int) -> None:
    """Take back a duplicate record whose file vanished before it could be moved.

    That file was not a second copy after all: the worker archived it (it was the
    scan's own file), or someone removed it. Only the row goes; no file is touched.
    """
    session.execute(delete(Duplicate).where(Duplicate.id == duplicate_id))
