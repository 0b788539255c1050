"""Read-only figures of the running service, for its page and its metrics (keyword-only)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, select
from sqlalchemy.orm import Session

from db.models import ModelVersion, Prediction, RunStatus, Scan, ScanStatus, TrainingRun

UNSCREENED = (ScanStatus.FAILED, ScanStatus.REJECTED)
FINISHED = (ScanStatus.DONE, *UNSCREENED)


def scans_by_status(session: Session) -> dict[str, int]:
    """How many scans are in each status (every status, zero included)."""
    counts = {status.value: 0 for status in ScanStatus}
    rows = session.execute(select(Scan.status, func.count()).group_by(Scan.status))
    for status, count in rows:
        counts[ScanStatus(status).value] = int(count)
    return counts


def failures_by_code(
    session: Session, *, since: datetime | None = None
) -> list[tuple[str, str, int]]:
    """(status, error code, count) of failed and rejected scans, most frequent first."""
    query = select(Scan.status, Scan.error_code, func.count()).where(Scan.status.in_(UNSCREENED))
    if since is not None:
        query = query.where(Scan.finished_at >= since)
    query = query.group_by(Scan.status, Scan.error_code).order_by(func.count().desc())
    return [
        (ScanStatus(status).value, code or "unknown", int(count))
        for status, code, count in session.execute(query)
    ]


def finished_times(session: Session, *, since: datetime) -> list[datetime]:
    """When each scan finished (done, failed, rejected) since `since`, oldest first."""
    query = (
        select(Scan.finished_at)
        .where(Scan.status.in_(FINISHED), Scan.finished_at >= since)
        .order_by(Scan.finished_at)
    )
    return [moment for moment in session.scalars(query) if moment is not None]


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    """A worker known by the verdicts it wrote."""

    name: str
    last_seen: datetime
    verdicts: int


def workers_seen(session: Session, *, since: datetime | None = None) -> list[WorkerSeen]:
    """Workers that wrote verdicts (since `since`), the most recently seen first."""
    last = func.max(Prediction.created_at)
    query = select(Prediction.worker, last, func.count()).where(Prediction.worker.is_not(None))
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    query = query.group_by(Prediction.worker).order_by(last.desc())
    found = []
    for name, seen, count in session.execute(query):
        found.append(WorkerSeen(str(name), seen, int(count)))
    return found


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts (`le` upper bounds, +Inf last), sum and count."""

    buckets: list[tuple[float, int]]
    total: float
    count: int


def _seconds_between(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _histogram(session: Session, value: Any, bounds: Sequence[float], *where: Any) -> Histogram:
    # One bucket number per row, grouped, then made cumulative here: a column per bound
    # (`SUM(CASE WHEN value <= bound ...)`) computed `value` once per bound for every row,
    # 0.3 s a scrape at 100,000 verdicts.
    bucket = case(*((value <= bound, index) for index, bound in enumerate(bounds)), else_=None)
    query = select(bucket, func.count(value), func.sum(cast(value, Float))).where(*where)
    per_bucket = [0] * len(bounds)
    count, total = 0, 0.0
    for index, n, subtotal in session.execute(query.group_by(bucket)):
        if index is not None:
            per_bucket[int(index)] += int(n)
        count += int(n)
        total += float(subtotal or 0.0)
    cumulative = list(itertools.accumulate(per_bucket))
    buckets = [(float(bound), n) for bound, n in zip(bounds, cumulative, strict=True)]
    return Histogram([*buckets, (float("inf"), count)], total, count)


def screening_latency(session: Session, *, bounds: Sequence[float]) -> Histogram:
    """Seconds from a scan's arrival to its first verdict, over every screened scan."""
    # The seconds are worked out once per scan, inside the grouped (never flattened)
    # subquery, so that the histogram's bucket, count and sum read a plain column.
    first = (
        select(
            _seconds_between(session, func.min(Prediction.created_at), Scan.received_at).label(
                "seconds"
            )
        )
        .select_from(Prediction)
        .join(Scan, Scan.id == Prediction.scan_id)
        .group_by(Prediction.scan_id, Scan.received_at)
        .subquery()
    )
    return _histogram(session, first.c.seconds, bounds)


def batch_sizes(session: Session, *, bounds: Sequence[float]) -> Histogram:
    """How many scans each verdict's batch held, over every verdict that recorded it."""
    return _histogram(session, Prediction.batch_size, bounds, Prediction.batch_size.is_not(None))


def runs_by_status(session: Session) -> dict[str, int]:
    """Training runs per outcome (every outcome, zero included)."""
    counts = {status.value: 0 for status in RunStatus}
    rows = session.execute(select(TrainingRun.status, func.count()).group_by(TrainingRun.status))
    for status, count in rows:
        counts[RunStatus(status).value] = int(count)
    return counts


def gate_outcomes(session: Session) -> dict[str, int]:
    """Registered versions by the gate's decision (`passed`, `failed`, `none` recorded)."""
    counts = {"passed": 0, "failed": 0, "none": 0}
    for metrics in session.scalars(select(ModelVersion.metrics)):
        gate = (metrics or {}).get("gate")
        if not isinstance(gate, dict) or "passed" not in gate:
            counts["none"] += 1
        else:
            counts["passed" if gate["passed"] else "failed"] += 1
    return counts
