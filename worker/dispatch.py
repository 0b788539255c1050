"""Send scan ids to the screening queue in batches; a broker outage loses nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from worker.celery_app import HEATMAPS_TASK, SCREEN_TASK, SCREENING_QUEUE

log = logging.getLogger(__name__)


T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` cut into lists of at most `size`, in order."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def send_batches(app: Celery, scan_ids: Sequence[int], *, batch_size: int) -> list[int]:
    """Send screening tasks; return the ids actually handed to the broker.

    Ids whose send failed stay `queued` in the database (written before the send), and
    the reconcile task sends them again once the broker is back.
    """
    sent: list[int] = []
    for batch in chunks(scan_ids, batch_size):
        try:
            app.send_task(SCREEN_TASK, args=[batch], queue=SCREENING_QUEUE)
        except (BrokerError, OSError) as exc:
            log.warning(
                "broker unavailable (%s): %d scans stay queued for the reconcile task",
                exc,
                len(scan_ids) - len(sent),
            )
            break
        sent.extend(batch)
    return sent


def send_heatmap_requests(app: Celery, scan_ids: Sequence[int], *, batch_size: int) -> None:
    """Ask for owed heatmaps in batches; a failed send is asked again by a later reconcile."""
    for batch in chunks(scan_ids, batch_size):
        try:
            app.send_task(HEATMAPS_TASK, args=[batch], queue=SCREENING_QUEUE)
        except (BrokerError, OSError) as exc:
            log.warning("broker unavailable (%s): heatmaps are asked for again later", exc)
            return
