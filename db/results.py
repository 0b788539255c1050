"""The results table people query: the `scan_results` view and its filtered listing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, Select, String, Table, Text, func, select
from sqlalchemy.orm import Session

from db.models import ScanStatus
from db.rows import OutputRow
from db.types import UTCDateTime

# The view is created by migration 0001 (later columns by 0004 and 0006). It lives in its own
# MetaData so that `create_all` and Alembic autogenerate never try to create it as a table.
_view_metadata = MetaData()
scan_results = Table(
    "scan_results",
    _view_metadata,
    Column("scan_id", Integer, primary_key=True),
    Column("sha256", String(64)),
    Column("source_path", Text),
    Column("stored_path", Text),
    Column("format", String(16)),
    Column("modality", String(16)),
    Column("body_part", String(64)),
    Column("view_position", String(16)),
    Column("study_instance_uid", String(64)),
    Column("sop_instance_uid", String(64)),
    Column("patient_ref", String(64)),
    Column("status", String(16)),
    Column("error", Text),
    Column("error_code", String(64)),
    Column("attempts", Integer),
    Column("received_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("label", String(64)),
    Column("probability", Float),
    Column("threshold", Float),
    Column("model_version", String(64)),
    Column("predicted_at", UTCDateTime()),
    Column("inference_precision", String(32)),
    Column("report_status", String(16)),
    Column("report_sent_at", UTCDateTime()),
    Column("report_error", Text),
    Column("heatmap_status", String(16)),
    Column("heatmap_path", Text),
)


@dataclass(frozen=True, slots=True)
class ResultRow(OutputRow):
    """One row of the results table; field names are the documented, stable output names."""

    scan_id: int
    sha256: str
    source_path: str
    stored_path: str | None
    format: str | None
    modality: str | None
    body_part: str | None
    view_position: str | None
    study_instance_uid: str | None
    sop_instance_uid: str | None
    patient_ref: str | None
    status: str
    error: str | None
    error_code: str | None
    attempts: int
    received_at: datetime
    finished_at: datetime | None
    label: str | None
    probability: float | None
    threshold: float | None
    model_version: str | None
    predicted_at: datetime | None
    inference_precision: str | None
    report_status: str | None
    report_sent_at: datetime | None
    report_error: str | None
    heatmap_status: str | None
    heatmap_path: str | None


@dataclass(frozen=True, slots=True)
class ResultFilter:
    """What `list_results` narrows the table to; every field is optional."""

    since: datetime | None = None
    until: datetime | None = None
    status: ScanStatus | None = None
    label: str | None = None
    min_probability: float | None = None
    model_version: str | None = None
    limit: int | None = 100
    offset: int = 0


def results_query(filters: ResultFilter) -> Select[Any]:
    """The SELECT behind `cxr-screen results`, newest scans first.

    A page (a limit or an offset) is chosen by scan number first and only its rows are
    read from the view: each row of the view looks up its scan's newest verdict, and
    PostgreSQL would otherwise look it up for every scan and sort them all (whole rows)
    before skipping to page 500 (0.6 s at 100,000 scans, bench/results/web_pages.md).
    Choosing the numbers reads only the scans (their `received_at` index) when no verdict
    column is filtered on: both databases leave the verdict joins out.
    """
    view = scan_results.c
    newest_first = (view.received_at.desc(), view.scan_id.desc())
    if filters.limit is None and not filters.offset:
        return _narrowed(select(scan_results), filters).order_by(*newest_first)
    page = _narrowed(select(view.scan_id), filters).order_by(*newest_first)
    if filters.limit is not None:
        page = page.limit(filters.limit)
    if filters.offset:
        page = page.offset(filters.offset)
    return select(scan_results).where(view.scan_id.in_(page)).order_by(*newest_first)


def _narrowed(query: Select[Any], filters: ResultFilter) -> Select[Any]:
    """`query` with the WHERE clauses of `filters` (limit and offset aside)."""
    view = scan_results.c
    if filters.since is not None:
        query = query.where(view.received_at >= filters.since)
    if filters.until is not None:
        query = query.where(view.received_at < filters.until)
    if filters.status is not None:
        query = query.where(view.status == filters.status.value)
    if filters.label is not None:
        query = query.where(view.label == filters.label)
    if filters.min_probability is not None:
        query = query.where(view.probability >= filters.min_probability)
    if filters.model_version is not None:
        query = query.where(view.model_version == filters.model_version)
    return query


def list_results(session: Session, *, filters: ResultFilter) -> list[ResultRow]:
    """Rows of the results table matching `filters`."""
    rows = session.execute(results_query(filters)).mappings()
    return [ResultRow(**dict(row)) for row in rows]


def get_result(session: Session, *, scan_id: int) -> ResultRow | None:
    """The results-table row of one scan, or None."""
    row = session.execute(select(scan_results).where(scan_results.c.scan_id == scan_id))
    found = row.mappings().first()
    return ResultRow(**dict(found)) if found is not None else None


def count_by_status(session: Session, *, filters: ResultFilter) -> dict[str, int]:
    """How many rows match `filters`, per status (every status, zero included), ignoring
    the filter's own status, limit and offset."""
    view = scan_results.c
    query = _narrowed(select(view.status, func.count()), replace(filters, status=None))
    counts = {status.value: 0 for status in ScanStatus}
    for status, count in session.execute(query.group_by(view.status)):
        counts[str(status)] = int(count)
    return counts
