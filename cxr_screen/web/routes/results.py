"""The results page (the `scan_results` rows, filtered and paged) and its CSV download."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from cxr_screen.cli.output import csv_cell
from cxr_screen.web.access import Db, SignedIn
from cxr_screen.web.filters import FIELDS, PAGE_SIZE, FilterError, parse_filters
from cxr_screen.web.render import render
from cxr_screen.web.state import web_state
from db.models import ScanStatus
from db.results import ResultFilter, ResultRow, count_by_status, list_results, results_query
from db.reviews import latest_reviews, review_counts
from db.session import session_scope

router = APIRouter()
CSV_CHUNK = 1000


@router.get("/")
def home(reader: SignedIn) -> Response:
    """The results are the front page."""
    return RedirectResponse("/results", status_code=303)


@router.get("/results", response_class=HTMLResponse)
def results_page(request: Request, db: Db, reader: SignedIn) -> Response:
    """Newest scans first, filtered as `cxr-screen results`, with counts per status."""
    try:
        filters = parse_filters(dict(request.query_params))
    except FilterError as exc:
        return _refused(request, reader, str(exc))
    rows = list_results(db, filters=filters.query)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    reviews = {r.scan_id: r for r in latest_reviews(db, scan_ids=[row.scan_id for row in rows])}
    context: dict[str, Any] = {
        "error": None,
        "typed": filters.typed,
        "rows": rows,
        "more": more,
        "filters": filters,
        "counts": count_by_status(db, filters=filters.query),
        "reviews": reviews,
        "review_counts": review_counts(db),
        "statuses": [s.value for s in ScanStatus],
    }
    return render(request, "results.html", context, reader=reader)


def _refused(request: Request, reader: SignedIn, error: str) -> Response:
    """The page with the filters as typed and what is wrong with them, without rows."""
    typed = dict.fromkeys(FIELDS, "") | {
        name: value[:200] for name, value in request.query_params.items() if name in FIELDS
    }
    context = {
        "error": error,
        "typed": typed,
        "rows": [],
        "more": False,
        "filters": None,
        "counts": {},
        "reviews": {},
        "review_counts": None,
        "statuses": [s.value for s in ScanStatus],
    }
    return render(request, "results.html", context, reader=reader, status=400)


@router.get("/results.csv")
def results_csv(request: Request, reader: SignedIn) -> Response:
    """Every row of the current filter (all pages) as CSV, as `cxr-screen results -f csv`."""
    try:
        filters = parse_filters(dict(request.query_params))
    except FilterError as exc:
        return Response(str(exc) + "\n", status_code=400, media_type="text/plain")
    query = replace(filters.query, limit=None, offset=0)
    return StreamingResponse(
        _csv_lines(request, query),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="scan-results.csv"'},
    )


def _csv_lines(request: Request, query: ResultFilter) -> Iterator[str]:
    """The CSV, a chunk of rows at a time, from one read-only transaction."""
    columns = ResultRow.field_names()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    with session_scope(web_state(request).factory) as db:
        found = db.execute(results_query(query)).mappings().yield_per(CSV_CHUNK)
        for count, mapping in enumerate(found, start=1):
            row = ResultRow(**dict(mapping)).to_dict()
            writer.writerow([csv_cell(row[name]) for name in columns])
            if count % CSV_CHUNK == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()
