"""Celery task of the nightly retraining; a thin wrapper around `trainer.nightly`."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from trainer.errors import TrainerError
from trainer.nightly import run_training
from worker.settings import load_settings

logger = logging.getLogger(__name__)

RETRAIN_TASK = "cxr.retrain"


# acks_late=False: a run can outlast the broker's visibility timeout, and a late ack
# would then redeliver it to a second worker. A lost run is simply retried next night;
# the training lock stops two at once in any case.
@shared_task(name=RETRAIN_TASK, acks_late=False)
def retrain(trigger: str = "nightly", force: bool = False) -> dict[str, Any]:
    """Retrain on the configured labelled folders; see `trainer.nightly.run_training`."""
    settings = load_settings()
    try:
        return run_training(settings, trigger=trigger, force=force)
    except TrainerError as exc:
        # Already recorded as a failed run with its log; a configuration problem is not
        # worth a traceback every night.
        logger.error("retraining failed: %s", exc)
        return {"status": "failed", "error": str(exc)}
