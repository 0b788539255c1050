"""Keyword-only data access for heatmaps: which are owed, what each attempt gave."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import HeatmapStatus, Prediction, Scan, ScanStatus
from db.reports import latest_prediction_id
from db.types import utcnow


@dataclass(frozen=True, slots=True)
class OwedHeatmap:
    """A done scan whose heatmap was asked for and not made, with its latest verdict."""

    scan_id: int
    sha256: str
    received_at: datetime
    stored_path: str | None
    model_version_id: int
    label: str
    probability: float
    threshold: float


def record_heatmaps(session: Session, *, made: dict[int, str], failed: dict[int, str]) -> None:
    """Note the heatmaps made (scan id -> PNG path) and those that failed (-> reason).

    Only pending ones change: a scan whose heatmap another attempt settled keeps it.
    """
    for scan_id, path in made.items():
        session.execute(
            update(Scan)
            .where(Scan.id == scan_id, Scan.heatmap_status == HeatmapStatus.PENDING)
            .values(heatmap_status=HeatmapStatus.DONE, heatmap_path=path, heatmap_error=None)
        )
    for scan_id, reason in failed.items():
        session.execute(
            update(Scan)
            .where(Scan.id == scan_id, Scan.heatmap_status == HeatmapStatus.PENDING)
            .values(heatmap_status=HeatmapStatus.FAILED, heatmap_error=reason)
        )


def stale_heatmaps(session: Session, *, older_than: timedelta, limit: int = 500) -> list[int]:
    """Done scans whose heatmap is still pending `older_than` after their row last changed.

    The worker that stored the verdict died before it made the heatmap (or recorded
    it). Each returned scan is stamped (its `updated_at` moves to now), so a second
    reconcile pass does not ask again while the first request is on its way.
    """
    now = utcnow()
    ids = list(
        session.scalars(
            select(Scan.id)
            .where(
                Scan.status == ScanStatus.DONE,
                Scan.heatmap_status == HeatmapStatus.PENDING,
                Scan.updated_at < now - older_than,
            )
            .order_by(Scan.id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(update(Scan).where(Scan.id.in_(ids)).values(updated_at=now))
    return ids


def owed_heatmaps(session: Session, *, scan_ids: list[int]) -> list[OwedHeatmap]:
    """The scans among `scan_ids` still owed a heatmap, with the verdict to explain."""
    latest = latest_prediction_id()
    rows = session.execute(
        select(Scan, Prediction)
        .join(Prediction, Prediction.id == latest)
        .where(
            Scan.id.in_(scan_ids),
            Scan.status == ScanStatus.DONE,
            Scan.heatmap_status == HeatmapStatus.PENDING,
        )
        .order_by(Scan.id)
    ).all()
    return [
        OwedHeatmap(
            scan_id=scan.id,
            sha256=scan.sha256,
            received_at=scan.received_at,
            stored_path=scan.stored_path,
            model_version_id=prediction.model_version_id,
            label=prediction.label,
            probability=prediction.probability,
            threshold=prediction.threshold,
        )
        for scan, prediction in rows
    ]


def record_heatmap_built(session: Session, *, scan_id: int, sop_instance_uid: str) -> None:
    """The heatmap's Secondary Capture was built (before it is sent with the report)."""
    session.execute(
        update(Scan).where(Scan.id == scan_id).values(heatmap_sop_instance_uid=sop_instance_uid)
    )
