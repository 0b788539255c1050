"""Which Celery task modules a worker process registers, per queue it consumes.

Kept here, above the layers: the screening layer must not name the trainer's tasks,
and a screening worker must not import TensorFlow's training code.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.celery_app import SCREENING_QUEUE, TRAINING_QUEUE

TASK_MODULES: dict[str, tuple[str, ...]] = {
    SCREENING_QUEUE: ("worker.tasks", "worker.pacs.tasks"),
    TRAINING_QUEUE: ("trainer.tasks",),
}


def task_modules(queues: Iterable[str]) -> tuple[str, ...]:
    """The task modules of all of `queues`, each once, in a stable order."""
    return tuple(dict.fromkeys(m for queue in queues for m in TASK_MODULES[queue]))
