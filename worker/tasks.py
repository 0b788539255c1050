"""Celery tasks of the screening worker: thin wrappers over plain functions."""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from db.heatmaps import stale_heatmaps
from db.scans import fail_claimed, reconcile
from db.session import session_scope
from worker.celery_app import HEATMAPS_TASK, RECONCILE_TASK, SCREEN_TASK
from worker.dispatch import send_batches, send_heatmap_requests
from worker.heatmaps import catch_up
from worker.imaging.errors import TransientError, brief
from worker.pipeline import ModelUnavailableError
from worker.runtime import process_context
from worker.screening import ScreeningContext, screen_batch
from worker.settings import Settings, load_settings

log = logging.getLogger(__name__)

# Outages of the database, the file share or the model store: retried with backoff,
# never recorded against the scans.
TRANSIENT = (OperationalError, InterfaceError, TransientError, ModelUnavailableError)
DATABASE_DOWN = (OperationalError, InterfaceError)
# Retries wait 1, 2, 4, 8 s and then at most RETRY_MAX_S, so work resumes within
# seconds of the outage's end (a backoff grown during a long outage would idle on).
# About five minutes of retries in all; then a storage outage fails the batch's scans
# with its reason, and a database outage leaves them to the claim timeout.
RETRY_MAX_S = 10.0
SCREEN_MAX_RETRIES = 32


def retry_delay(retries: int) -> float:
    """Seconds before retry number `retries` + 1: capped exponential, with jitter."""
    delay = min(RETRY_MAX_S, 2.0**retries)
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


@shared_task(name=SCREEN_TASK, bind=True, max_retries=SCREEN_MAX_RETRIES)
def screen_batch_task(self: Task, scan_ids: list[int]) -> dict[str, Any]:
    """Screen a batch of scan ids (see `worker.screening.screen_batch`)."""
    ids = [int(i) for i in scan_ids]
    try:
        report = screen_batch(process_context(), ids)
    except TRANSIENT as exc:
        retries = self.request.retries
        if retries >= SCREEN_MAX_RETRIES:
            _give_up(ids, exc, retries)
            raise
        delay = retry_delay(retries)
        # One line, no traceback: an outage is expected and says what it is.
        log.warning(
            "batch %s: %s; retry %d of %d in %.1f s",
            self.request.id,
            _describe(exc),
            retries + 1,
            SCREEN_MAX_RETRIES,
            delay,
        )
        raise self.retry(exc=exc, countdown=delay) from None
    summary = report.as_dict()
    log.info("batch %s: %s", self.request.id, summary)
    return summary


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DATABASE_DOWN):
        return f"database unavailable ({type(exc.orig).__name__ if exc.orig else 'error'})"
    if isinstance(exc, TransientError):
        return exc.message
    return brief(exc)


def _give_up(ids: list[int], exc: BaseException, retries: int) -> None:
    """The retries ran out: end the scans with the reason, where that can be written."""
    ctx = process_context()
    if isinstance(exc, TransientError):
        message = f"gave up after {retries + 1} tries: {exc.message}"
        try:
            with session_scope(ctx.session_factory) as session:
                failed = fail_claimed(
                    session, scan_ids=ids, worker=ctx.worker_name, code=exc.code, error=message
                )
        except DATABASE_DOWN:
            failed = []
        log.error("batch %s: %s; scans %s failed", ids, message, failed)
        return
    # A database outage cannot be recorded in the database: the scans stay claimed and
    # the reconcile task takes them back after CXR_CLAIM_TIMEOUT_S. A model outage
    # handed them back to the queue already.
    log.error(
        "batch %s: giving up after %d tries (%s); the scans are sent again by the reconcile task",
        ids,
        retries + 1,
        _describe(exc),
    )


@shared_task(name=RECONCILE_TASK, bind=True)
def reconcile_task(self: Task) -> dict[str, Any]:
    """Requeue scans of dead workers, fail scans that keep killing workers, resend lost ones.

    A database outage skips this run with one warning line: the next run, a minute
    later, does the work.
    """
    settings = load_settings()
    ctx = process_context()
    try:
        with session_scope(ctx.session_factory) as session:
            outcome = reconcile(
                session,
                claim_timeout=timedelta(seconds=settings.screening.claim_timeout_s),
                requeue_after=timedelta(seconds=settings.screening.requeue_after_s),
                max_attempts=settings.screening.max_attempts,
            )
    except DATABASE_DOWN as exc:
        log.warning("reconcile skipped: %s; the next run tries again", _describe(exc))
        return {"skipped": "database unavailable"}
    sent = send_batches(self.app, outcome.to_send, batch_size=settings.screening.batch_size)
    owed = _owed_heatmaps(ctx, settings)
    if owed:
        send_heatmap_requests(self.app, owed, batch_size=settings.screening.batch_size)
        log.info("reconcile: asked again for %d heatmaps a worker left unmade", len(owed))
    if outcome.requeued or outcome.failed or outcome.to_send:
        log.info(
            "reconcile: requeued %d, failed %d, sent %d of %d queued",
            len(outcome.requeued),
            len(outcome.failed),
            len(sent),
            len(outcome.to_send),
        )
    return {"requeued": outcome.requeued, "failed": outcome.failed, "sent": len(sent)}


def _owed_heatmaps(ctx: ScreeningContext, settings: Settings) -> list[int]:
    """Heatmaps asked for with a verdict whose worker died before making them."""
    if ctx.filing is None:
        return []
    try:
        with session_scope(ctx.session_factory) as session:
            return stale_heatmaps(
                session, older_than=timedelta(seconds=settings.screening.requeue_after_s)
            )
    except DATABASE_DOWN:
        return []


@shared_task(name=HEATMAPS_TASK, bind=True)
def heatmaps_task(self: Task, scan_ids: list[int]) -> dict[str, Any]:
    """Make the heatmaps still owed among `scan_ids` (see `worker.heatmaps.catch_up`)."""
    ctx = process_context()
    if ctx.filing is None:
        return {"made": [], "failed": []}
    made, failed = catch_up(
        ctx.session_factory,
        ctx.filing,
        ctx.models,
        ctx.heatmaps,
        ctx.decode_options,
        [int(i) for i in scan_ids],
    )
    log.info("heatmaps %s: made %s, failed %s", self.request.id, sorted(made), sorted(failed))
    return {"made": sorted(made), "failed": sorted(failed)}
