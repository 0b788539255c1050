"""Keyword-only data access for the scan life cycle: record, claim, finish, reconcile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from db.models import Prediction, Scan, ScanStatus
from db.types import utcnow


def _upsert(session: Session, entity: type[Scan] | type[Prediction]) -> Any:
    # INSERT ... ON CONFLICT DO NOTHING exists on both backends, under two dialect APIs.
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(entity)
    return sqlite_insert(entity)


def find_scan_by_hash(session: Session, *, sha256: str) -> Scan | None:
    """The scan with this content hash, if the file was seen before."""
    return session.scalars(select(Scan).where(Scan.sha256 == sha256)).one_or_none()


def record_scan(
    session: Session, *, sha256: str, source_path: str, size_bytes: int, **fields: Any
) -> tuple[Scan, bool]:
    """Insert a queued scan, or return the existing one with that hash.

    Returns:
        The scan and True when it is new. The unique hash makes this safe when two
        watchers race: the loser gets the winner's row.
    """
    values = {
        "sha256": sha256,
        "source_path": source_path,
        "stored_path": source_path,
        "size_bytes": size_bytes,
        "status": ScanStatus.QUEUED,
        "received_at": utcnow(),
        **fields,
    }
    # Python-side defaults (attempts, updated_at) are applied by the ORM only; give
    # them here because this is a Core insert.
    values.setdefault("attempts", 0)
    values.setdefault("updated_at", values["received_at"])
    statement = (
        _upsert(session, Scan).values(**values).on_conflict_do_nothing(index_elements=["sha256"])
    )
    inserted = session.execute(statement.returning(Scan.id)).scalar_one_or_none()
    scan = find_scan_by_hash(session, sha256=sha256)
    if scan is None:  # pragma: no cover - the row exists by now, by one path or the other
        raise RuntimeError(f"scan {sha256} vanished right after it was recorded")
    return scan, inserted is not None


def mark_sent(session: Session, *, scan_ids: Sequence[int], at: datetime | None = None) -> None:
    """Note that tasks for these queued scans were handed to the broker."""
    if scan_ids:
        session.execute(
            update(Scan)
            .where(Scan.id.in_(scan_ids), Scan.status == ScanStatus.QUEUED)
            .values(queued_at=at or utcnow())
        )


def claim_scans(session: Session, *, scan_ids: Sequence[int], worker: str) -> list[Scan]:
    """Atomically take the queued scans among `scan_ids` for `worker`.

    One UPDATE ... WHERE status = 'queued', so two workers never claim the same scan;
    a worker may re-claim scans it already holds (its own retry after a database or
    storage outage). Only a claim taken from the queue counts as an attempt: a retry of
    the same worker is the same attempt, so outages never spend a scan's attempts (only
    a claim lost with its worker does, see `reconcile`). Returns the claimed scans.
    """
    if not scan_ids:
        return []
    now = utcnow()
    claimed = session.scalars(
        update(Scan)
        .where(
            Scan.id.in_(scan_ids),
            or_(
                Scan.status == ScanStatus.QUEUED,
                and_(Scan.status == ScanStatus.PROCESSING, Scan.claimed_by == worker),
            ),
        )
        .values(
            status=ScanStatus.PROCESSING,
            claimed_at=now,
            claimed_by=worker,
            attempts=case(
                (Scan.status == ScanStatus.QUEUED, Scan.attempts + 1), else_=Scan.attempts
            ),
            updated_at=now,
        )
        .returning(Scan.id)
    ).all()
    if not claimed:
        return []
    return list(session.scalars(select(Scan).where(Scan.id.in_(claimed)).order_by(Scan.id)))


def _held_by(worker: str, scan_ids: Sequence[int]) -> tuple[ColumnElement[bool], ...]:
    """The scans among `scan_ids` that `worker` holds now (claimed, not taken back)."""
    return (
        Scan.id.in_(scan_ids),
        Scan.status == ScanStatus.PROCESSING,
        Scan.claimed_by == worker,
    )


def release_scans(session: Session, *, scan_ids: Sequence[int], worker: str) -> None:
    """Give claimed scans back to the queue untouched (no model, shutting down)."""
    if scan_ids:
        session.execute(
            update(Scan)
            .where(*_held_by(worker, scan_ids))
            .values(
                status=ScanStatus.QUEUED,
                claimed_at=None,
                claimed_by=None,
                attempts=Scan.attempts - 1,
                updated_at=utcnow(),
            )
        )


@dataclass(frozen=True, slots=True)
class NewPrediction:
    """What the worker concluded about one scan."""

    scan_id: int
    label: str
    probability: float
    probabilities: dict[str, float]
    threshold: float
    inference_ms: float
    batch_size: int
    inference_precision: str


def store_predictions(
    session: Session,
    *,
    predictions: Sequence[NewPrediction],
    model_version_id: int,
    worker: str,
    scan_updates: dict[int, dict[str, Any]],
) -> int:
    """Write predictions and mark their scans done; returns how many were new.

    `scan_updates` carries per-scan columns learnt while screening (where the file was
    archived, the DICOM header's modality, view, UIDs and patient reference).

    Idempotent: a prediction that exists for (scan, model version) is left alone, so a
    redelivered or re-run batch writes nothing twice.
    """
    if not predictions:
        return 0
    now = utcnow()
    rows = [
        {
            "scan_id": p.scan_id,
            "model_version_id": model_version_id,
            "label": p.label,
            "probability": p.probability,
            "probabilities": p.probabilities,
            "threshold": p.threshold,
            "inference_ms": p.inference_ms,
            "batch_size": p.batch_size,
            "inference_precision": p.inference_precision,
            "worker": worker,
            "created_at": now,
        }
        for p in predictions
    ]
    statement = (
        _upsert(session, Prediction)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["scan_id", "model_version_id"])
    )
    new = session.execute(statement.returning(Prediction.id)).all()
    for p in predictions:
        session.execute(
            update(Scan)
            .where(Scan.id == p.scan_id)
            .values(
                status=ScanStatus.DONE,
                finished_at=now,
                error=None,
                error_code=None,
                updated_at=now,
                **scan_updates.get(p.scan_id, {}),
            )
        )
    return len(new)


def mark_unscreenable(
    session: Session,
    *,
    scan_id: int,
    status: ScanStatus,
    code: str,
    error: str,
    stored_path: str | None,
    header: dict[str, Any] | None = None,
) -> None:
    """Record that a scan was rejected or failed, why, and where its file now is.

    `header` holds what is known of a rejected file (its modality, body part, UIDs), so a
    site can see what kind of images are being sent to the wrong place.
    """
    if status not in (ScanStatus.FAILED, ScanStatus.REJECTED):
        raise ValueError(f"{status} is not a final error status: use failed or rejected")
    now = utcnow()
    session.execute(
        update(Scan)
        .where(Scan.id == scan_id)
        .values(
            status=status,
            error_code=code,
            error=error,
            finished_at=now,
            stored_path=stored_path if stored_path is not None else Scan.stored_path,
            updated_at=now,
            **(header or {}),
        )
    )


def fail_claimed(
    session: Session, *, scan_ids: Sequence[int], worker: str, code: str, error: str
) -> list[int]:
    """Fail the scans among `scan_ids` that `worker` still holds (its retries ran out).

    Returns:
        The ids that were failed.
    """
    if not scan_ids:
        return []
    now = utcnow()
    failed = session.scalars(
        update(Scan)
        .where(*_held_by(worker, scan_ids))
        .values(
            status=ScanStatus.FAILED,
            error_code=code,
            error=error,
            finished_at=now,
            claimed_at=None,
            claimed_by=None,
            updated_at=now,
        )
        .returning(Scan.id)
    ).all()
    return list(failed)


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    """What one reconcile pass changed."""

    requeued: list[int]
    failed: list[int]
    to_send: list[int]


def reconcile(
    session: Session,
    *,
    claim_timeout: timedelta,
    requeue_after: timedelta,
    max_attempts: int,
    limit: int = 5000,
) -> ReconcileOutcome:
    """Recover scans a dead worker or a lost message left behind.

    - `processing` past the claim timeout: back to `queued`, or `failed` after
      `max_attempts` claims (a file that kills its worker must not loop forever).
    - `queued` and not sent for `requeue_after`: returned in `to_send` and stamped sent.
    """
    now = utcnow()
    stale = list(
        session.scalars(
            select(Scan)
            .where(Scan.status == ScanStatus.PROCESSING, Scan.claimed_at < now - claim_timeout)
            .limit(limit)
        )
    )
    requeued: list[int] = []
    failed: list[int] = []
    for scan in stale:
        holder = scan.claimed_by or "unknown worker"
        if scan.attempts >= max_attempts:
            scan.status = ScanStatus.FAILED
            scan.error_code = "worker_lost"
            scan.error = (
                f"{scan.source_path}: no result after {scan.attempts} attempts (last worker "
                f"{holder} stopped answering); the file may crash the decoder or the "
                "model: inspect it with `cxr-screen inspect`"
            )
            scan.finished_at = now
            failed.append(scan.id)
        else:
            scan.status = ScanStatus.QUEUED
            scan.queued_at = None
            requeued.append(scan.id)
        scan.claimed_at = None
        scan.claimed_by = None
    session.flush()
    due = list(
        session.scalars(
            select(Scan.id)
            .where(
                Scan.status == ScanStatus.QUEUED,
                or_(Scan.queued_at.is_(None), Scan.queued_at < now - requeue_after),
            )
            .order_by(Scan.id)
            .limit(limit)
        )
    )
    mark_sent(session, scan_ids=due, at=now)
    return ReconcileOutcome(requeued=requeued, failed=failed, to_send=due)
