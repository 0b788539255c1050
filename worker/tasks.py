"""Celery tasks of the screening worker: thin wrappers over plain functions."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from db.scans import reconcile
from db.session import session_scope
from worker.celery_app import RECONCILE_TASK, SCREEN_TASK
from worker.dispatch import send_batches
from worker.errors import TransientError
from worker.inference import ModelUnavailableError
from worker.runtime import process_context
from worker.screening import screen_batch
from worker.settings import load_settings

log = logging.getLogger(__name__)

# Outages of the database, the file share or the model store: retried with backoff,
# never recorded against the scans.
TRANSIENT = (OperationalError, InterfaceError, TransientError, ModelUnavailableError)


@shared_task(
    name=SCREEN_TASK,
    bind=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=None,
)
def screen_batch_task(self: Task, scan_ids: list[int]) -> dict[str, Any]:
    """Screen a batch of scan ids (see `worker.screening.screen_batch`)."""
    report = screen_batch(process_context(), [int(i) for i in scan_ids])
    summary = report.as_dict()
    log.info("batch %s: %s", self.request.id, summary)
    return summary


@shared_task(
    name=RECONCILE_TASK,
    bind=True,
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    max_retries=3,
)
def reconcile_task(self: Task) -> dict[str, Any]:
    """Requeue scans of dead workers, fail scans that keep killing workers, resend lost ones."""
    settings = load_settings()
    ctx = process_context()
    with session_scope(ctx.session_factory) as session:
        outcome = reconcile(
            session,
            claim_timeout=timedelta(seconds=settings.claim_timeout_s),
            requeue_after=timedelta(seconds=settings.requeue_after_s),
            max_attempts=settings.max_attempts,
        )
    sent = send_batches(self.app, outcome.to_send, batch_size=settings.batch_size)
    if outcome.requeued or outcome.failed or outcome.to_send:
        log.info(
            "reconcile: requeued %d, failed %d, sent %d of %d queued",
            len(outcome.requeued),
            len(outcome.failed),
            len(sent),
            len(outcome.to_send),
        )
    return {"requeued": outcome.requeued, "failed": outcome.failed, "sent": len(sent)}
