"""Celery task of the report sender: a thin periodic wrapper over `send_due_reports`."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.pacs import quiet_pynetdicom
from worker.pacs.sending import ReportConfig, send_due_reports
from worker.runtime import process_context
from worker.settings import load_settings

log = logging.getLogger(__name__)

SEND_REPORTS_TASK = "cxr.send_reports"


@shared_task(name=SEND_REPORTS_TASK, bind=True)
def send_reports_task(self: Task) -> dict[str, Any]:
    """Send the Structured Reports that are due (see `worker.pacs.sending`).

    Delivery failures are recorded per scan with their own backoff. A database outage
    skips this run with one warning line; the next scheduled run picks the work up.
    """
    settings = load_settings()
    quiet_pynetdicom(settings.log_level)
    try:
        summary = send_due_reports(
            process_context().session_factory, ReportConfig.from_settings(settings)
        )
    except (OperationalError, InterfaceError) as exc:
        cause = type(exc.orig).__name__ if exc.orig else "error"
        log.warning("report sending skipped: database unavailable (%s); next run retries", cause)
        return {"skipped": "database unavailable"}
    if summary.sent or summary.retrying or summary.failed:
        log.info("reports %s: %s", self.request.id, summary.as_dict())
    return summary.as_dict()
