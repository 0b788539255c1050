"""Keyword-only data access for sending results to the PACS: due reports, claims, outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, ScalarSelect, and_, or_, select, update
from sqlalchemy.orm import Session

from db.models import HeatmapStatus, ModelVersion, Prediction, ReportStatus, Scan, ScanStatus


@dataclass(frozen=True, slots=True)
class ReportJob:
    """What the sender needs to build and send one scan's report, detached from the session.

    The prediction fields are None when the scan has no prediction (it cannot have a
    report then). `attempts` counts this attempt.
    """

    scan_id: int
    sha256: str
    received_at: datetime
    stored_path: str | None
    sop_instance_uid: str | None
    attempts: int
    report_path: str | None
    report_sop_instance_uid: str | None
    prediction_id: int | None
    label: str | None
    probability: float | None
    threshold: float | None
    model_version: str | None
    positive_class: str | None
    heatmap_path: str | None = None  # the PNG of a heatmap to send with the report


def latest_prediction_id() -> ScalarSelect[int]:
    """The id of a scan's latest prediction, as a subquery correlated to `Scan` (the one
    the results view and the report show)."""
    return (
        select(Prediction.id)
        .where(Prediction.scan_id == Scan.id)
        .order_by(Prediction.created_at.desc(), Prediction.id.desc())
        .limit(1)
        .correlate(Scan)
        .scalar_subquery()
    )


def mark_new_reports(session: Session, *, enabled: bool) -> int:
    """Give every screened DICOM scan not yet considered a report status; returns how many.

    `pending` when reports are on; `disabled` when they are off, so that turning them on
    later sends the results of new scans only, not of every scan ever screened.
    """
    result = session.execute(
        update(Scan)
        .where(
            Scan.report_status.is_(None),
            Scan.format == "dicom",
            Scan.status == ScanStatus.DONE,
        )
        .values(
            report_status=ReportStatus.PENDING if enabled else ReportStatus.DISABLED,
            report_next_attempt_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _due(now: datetime) -> ColumnElement[bool]:
    return and_(
        Scan.report_status == ReportStatus.PENDING,
        or_(Scan.report_next_attempt_at.is_(None), Scan.report_next_attempt_at <= now),
        # A heatmap being made goes with the report: wait for it (made or failed).
        or_(Scan.heatmap_status.is_(None), Scan.heatmap_status != HeatmapStatus.PENDING),
    )


def claim_due_reports(
    session: Session, *, now: datetime, lease: timedelta, limit: int
) -> list[ReportJob]:
    """Atomically take up to `limit` pending reports that are due, oldest scan first.

    A claim moves the next attempt `lease` into the future and counts the attempt, so a
    second sender running at the same time skips these scans, and a sender that dies
    mid-send leaves them to be retried once the lease is over.
    """
    due_ids = select(Scan.id).where(_due(now)).order_by(Scan.id).limit(limit)
    claimed = session.scalars(
        update(Scan)
        .where(Scan.id.in_(due_ids.scalar_subquery()), _due(now))
        .values(
            report_next_attempt_at=now + lease,
            report_attempts=Scan.report_attempts + 1,
        )
        .returning(Scan.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        return []
    latest = latest_prediction_id()
    rows = session.execute(
        select(Scan, Prediction, ModelVersion)
        .outerjoin(Prediction, Prediction.id == latest)
        .outerjoin(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(Scan.id.in_(claimed))
        .order_by(Scan.id)
    ).all()
    return [
        ReportJob(
            scan_id=scan.id,
            sha256=scan.sha256,
            received_at=scan.received_at,
            stored_path=scan.stored_path,
            sop_instance_uid=scan.sop_instance_uid,
            attempts=scan.report_attempts,
            report_path=scan.report_path,
            report_sop_instance_uid=scan.report_sop_instance_uid,
            prediction_id=prediction.id if prediction else None,
            label=prediction.label if prediction else None,
            probability=prediction.probability if prediction else None,
            threshold=prediction.threshold if prediction else None,
            model_version=model.version if model else None,
            positive_class=model.positive_class if model else None,
            heatmap_path=scan.heatmap_path if scan.heatmap_status is HeatmapStatus.DONE else None,
        )
        for scan, prediction, model in rows
    ]


def record_report_built(
    session: Session, *, scan_id: int, path: str, sop_instance_uid: str
) -> None:
    """Note where a scan's report is kept and its UID, before it is sent.

    A retry sends the same file, so the PACS sees one instance however many tries it took.
    """
    session.execute(
        update(Scan)
        .where(Scan.id == scan_id)
        .values(report_path=path, report_sop_instance_uid=sop_instance_uid)
    )


def record_report_sent(session: Session, *, scan_id: int, sent_at: datetime) -> None:
    """The destination stored the report."""
    session.execute(
        update(Scan)
        .where(Scan.id == scan_id)
        .values(
            report_status=ReportStatus.SENT,
            report_sent_at=sent_at,
            report_next_attempt_at=None,
            report_error=None,
        )
    )


def record_report_failure(
    session: Session, *, scan_id: int, error: str, retry_at: datetime | None
) -> None:
    """A try failed: retry at `retry_at`, or give up (`failed`) when it is None."""
    session.execute(
        update(Scan)
        .where(Scan.id == scan_id)
        .values(
            report_status=ReportStatus.PENDING if retry_at is not None else ReportStatus.FAILED,
            report_next_attempt_at=retry_at,
            report_error=error,
        )
    )
