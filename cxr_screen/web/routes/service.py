"""The service page: queue, throughput, failures, report deliveries, workers, active model."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from cxr_screen.web.access import Db, SignedIn
from cxr_screen.web.render import render
from db import service_stats
from db.model_registry import get_active_model
from db.report_admin import count_reports
from db.types import utcnow

router = APIRouter()
WINDOW = timedelta(hours=3)
BUCKET = timedelta(minutes=10)
WORKERS_WINDOW = timedelta(hours=1)
FAILURES_WINDOW = timedelta(hours=24)


@router.get("/service", response_class=HTMLResponse)
def service_page(request: Request, db: Db, reader: SignedIn) -> Response:
    """How the service is doing now, from the database every process writes to."""
    now = utcnow()
    context = {
        "now": now,
        "by_status": service_stats.scans_by_status(db),
        "rates": per_minute(service_stats.finished_times(db, since=now - WINDOW), now=now),
        "failures": service_stats.failures_by_code(db, since=now - FAILURES_WINDOW),
        "reports": {status.value: n for status, n in count_reports(db).items()},
        "workers": service_stats.workers_seen(db, since=now - WORKERS_WINDOW),
        "active": get_active_model(db),
    }
    return render(request, "service.html", context, reader=reader)


def per_minute(times: list[datetime], *, now: datetime) -> list[tuple[datetime, float]]:
    """Scans finished per minute in each 10-minute bucket of the window, oldest first.

    Buckets start on the clock's 10 minutes; the last one is the current, partial one.
    """
    buckets = int(WINDOW / BUCKET)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight + ((now - midnight) // BUCKET + 1) * BUCKET - WINDOW
    counts = [0] * buckets
    for moment in times:
        index = (moment - start) // BUCKET  # floor: a moment before the window is < 0
        if 0 <= index < buckets:
            counts[index] += 1
    minutes = BUCKET.total_seconds() / 60
    return [(start + i * BUCKET, counts[i] / minutes) for i in range(buckets)]
