"""Keyword-only data access for people who look after report delivery: list, count, re-send."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import ReportStatus, Scan, ScanStatus
from db.rows import OutputRow

# Ids per statement: far below SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ReportRow(OutputRow):
    """One scan's report delivery; field names are the documented, stable output names."""

    scan_id: int
    received_at: datetime
    report_status: str
    report_attempts: int
    report_next_attempt_at: datetime | None
    report_sent_at: datetime | None
    report_error: str | None
    report_sop_instance_uid: str | None


def list_reports(
    session: Session, *, status: ReportStatus | None = None, limit: int | None = 100
) -> list[ReportRow]:
    """The scans that have a report status (optionally only `status`), newest scan first.

    Scans without one (JPEG and PNG scans, scans not screened yet) have no report and are
    not listed. `limit=None` lists them all.
    """
    query = select(
        Scan.id,
        Scan.received_at,
        Scan.report_status,
        Scan.report_attempts,
        Scan.report_next_attempt_at,
        Scan.report_sent_at,
        Scan.report_error,
        Scan.report_sop_instance_uid,
    ).where(Scan.report_status.is_not(None))
    if status is not None:
        query = query.where(Scan.report_status == status)
    query = query.order_by(Scan.received_at.desc(), Scan.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [
        ReportRow(
            scan_id=row.id,
            received_at=row.received_at,
            report_status=ReportStatus(row.report_status).value,
            report_attempts=row.report_attempts,
            report_next_attempt_at=row.report_next_attempt_at,
            report_sent_at=row.report_sent_at,
            report_error=row.report_error,
            report_sop_instance_uid=row.report_sop_instance_uid,
        )
        for row in session.execute(query)
    ]


def count_reports(session: Session) -> dict[ReportStatus, int]:
    """How many scans have each report status; every status is present, 0 when none."""
    counts = dict.fromkeys(ReportStatus, 0)
    rows = session.execute(
        select(Scan.report_status, func.count())
        .where(Scan.report_status.is_not(None))
        .group_by(Scan.report_status)
    )
    for status, count in rows:
        if status is not None:
            counts[ReportStatus(status)] = int(count)
    return counts


class Refusal(enum.StrEnum):
    """Why a named scan's report cannot be queued: it has no report status."""

    NO_SUCH_SCAN = "no_such_scan"
    NOT_DICOM = "not_dicom"  # JPEG or PNG: reports go back to a PACS, for DICOM scans only
    NOT_SCREENED = "not_screened"  # queued, processing, rejected or failed: no result
    NOT_YET_MARKED = "not_yet_marked"  # done DICOM scan the sender has not considered yet


@dataclass(frozen=True, slots=True)
class Refused:
    """A named scan whose report was not queued, with the facts that say why."""

    scan_id: int
    reason: Refusal
    scan_status: ScanStatus | None = None
    format: str | None = None


@dataclass(frozen=True, slots=True)
class Requeued:
    """A report made due again, and the status it had before."""

    scan_id: int
    previous_status: ReportStatus


@dataclass(frozen=True, slots=True)
class RequeueOutcome:
    """What `requeue_reports` did: the reports queued, the named scans refused (by id)."""

    queued: list[Requeued] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def requeue_reports(
    session: Session, *, scan_ids: Collection[int] = (), failed: bool = False, now: datetime
) -> RequeueOutcome:
    """Make reports due again: the named scans' (whatever their status) and every failed one.

    `failed` adds every report that was given up on to the named ones.

    A queued report is `pending`, due at `now`, with its attempts back at 0 (so it gets
    the full number of tries again) and its error cleared (the next try records its
    own). Its kept file and SOP Instance UID stay: the sender sends that same instance
    again, so a PACS that already stored it keeps one instance, not a copy. Its
    `report_sent_at` stays too: the last time the destination stored it.

    A named scan without a report status is refused (see `Refusal`), never queued.
    """
    named = sorted(set(scan_ids))
    facts = {
        row.id: row
        for chunk in _chunks(named)
        for row in session.execute(
            select(Scan.id, Scan.format, Scan.status, Scan.report_status).where(Scan.id.in_(chunk))
        )
    }
    outcome = RequeueOutcome()
    eligible: dict[int, ReportStatus] = {}
    for scan_id in named:
        row = facts.get(scan_id)
        if row is None:
            outcome.refused.append(Refused(scan_id, Refusal.NO_SUCH_SCAN))
        elif row.report_status is not None:
            eligible[scan_id] = ReportStatus(row.report_status)
        else:
            status = ScanStatus(row.status)
            if row.format != "dicom":
                reason = Refusal.NOT_DICOM
            elif status is not ScanStatus.DONE:
                reason = Refusal.NOT_SCREENED
            else:
                reason = Refusal.NOT_YET_MARKED
            outcome.refused.append(Refused(scan_id, reason, status, row.format))
    values = {
        "report_status": ReportStatus.PENDING,
        "report_next_attempt_at": now,
        "report_attempts": 0,
        "report_error": None,
    }
    for chunk in _chunks(sorted(eligible)):
        queued = session.scalars(
            update(Scan)
            .where(Scan.id.in_(chunk), Scan.report_status.is_not(None))
            .values(**values)
            .returning(Scan.id)
            .execution_options(synchronize_session=False)
        ).all()
        outcome.queued.extend(Requeued(scan_id, eligible[scan_id]) for scan_id in sorted(queued))
    if failed:
        # After the named ones: a named failed report is queued once, not twice.
        queued = session.scalars(
            update(Scan)
            .where(Scan.report_status == ReportStatus.FAILED)
            .values(**values)
            .returning(Scan.id)
            .execution_options(synchronize_session=False)
        ).all()
        outcome.queued.extend(Requeued(scan_id, ReportStatus.FAILED) for scan_id in sorted(queued))
    outcome.queued.sort(key=lambda item: item.scan_id)
    return outcome


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
