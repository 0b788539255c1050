"""The Celery app, built from settings: JSON only, late acks, one queue per kind of work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu.entity import Queue
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport

from db.session import private_sqlite_file
from worker.settings import Settings

SCREENING_QUEUE = "screening"
TRAINING_QUEUE = "training"
SCREEN_TASK = "cxr.screen_batch"
RECONCILE_TASK = "cxr.reconcile"
RETRAIN_TASK = "cxr.retrain"
SEND_REPORTS_TASK = "cxr.send_reports"
HEATMAPS_TASK = "cxr.heatmaps"


def _cron(expression: str) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


EMBEDDED_PREFIX = "sqla+"
EMBEDDED_POLL_S = 0.1


class EmbeddedTransport(SQLAlchemyTransport):
    """kombu's SQLAlchemy transport, polled every 0.1 s instead of every second.

    A database table cannot notify a consumer, so an idle worker polls it. kombu's
    default of 1 s made every task sent to an idle worker wait up to a second (a lone
    scan's latency, and the start of every burst). Each poll is a short write
    transaction on the broker file (kombu locks it to take a message), about a
    millisecond; an idle worker polling ten times a second uses a few percent of a core.
    The interval cannot go through transport options: this transport hands those to
    `create_engine`, which refuses unknown ones.
    """

    polling_interval = EMBEDDED_POLL_S


class EmbeddedBackgroundTransport(SQLAlchemyTransport):
    """kombu's SQLAlchemy transport with its 1 s poll, for a worker whose tasks can wait
    a second (retraining): each poll of an idle worker costs a few milliseconds of CPU
    that the screening worker beside it would otherwise have."""


def _embedded_broker_path(url: str) -> Path | None:
    prefix = EMBEDDED_PREFIX + "sqlite:///"
    return Path(url.removeprefix(prefix)) if url.startswith(prefix) else None


def create_app(
    settings: Settings,
    *,
    include: tuple[str, ...],
    background: bool = False,
) -> Celery:
    """A Celery app for these settings.

    Args:
        settings: Validated settings (broker URL, timeouts, schedule).
        include: Task modules this process registers (`cxr_screen.task_modules` says
            which per queue). Beat and producers send tasks by name and need none.
        background: A worker that consumes only background work (training): on the
            embedded broker it polls once a second instead of ten times.
    """
    embedded = _embedded_broker_path(settings.storage.broker_url)
    if embedded is not None:
        embedded.parent.mkdir(parents=True, exist_ok=True)
        # kombu creates the file itself; made first, it is owner-only like the results db.
        private_sqlite_file(embedded)
    app = Celery("cxr-screen", broker=settings.storage.broker_url, include=list(include))
    transport_options: dict[str, Any]
    if embedded is not None:
        # The same database URL without the `sqla+` prefix (which would select kombu's
        # own class), and our transport class named instead.
        app.conf.broker_url = settings.storage.broker_url.removeprefix(EMBEDDED_PREFIX)
        transport = EmbeddedBackgroundTransport if background else EmbeddedTransport
        app.conf.broker_transport = f"{__name__}:{transport.__name__}"
        # kombu's SQLAlchemy transport hands these to create_engine: wait for SQLite's
        # write lock instead of failing when the watcher, worker and beat write at once.
        transport_options = {"connect_args": {"timeout": 30}}
    else:
        # Redis hands an unacknowledged task to another worker after this long: longer
        # than any batch can legitimately take (see ScreeningSettings.visibility_timeout_s).
        transport_options = {"visibility_timeout": settings.screening.visibility_timeout_s}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # A task is acknowledged only after it ran; a worker lost mid-task means the
        # broker delivers it again. Prefetch 1: a batch never waits behind another batch
        # in a busy worker's buffer while an idle worker could take it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # A producer (the watcher) must not hang when the broker is down: the scan rows
        # are already written and the reconcile task sends them later.
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        task_queues=[Queue(SCREENING_QUEUE), Queue(TRAINING_QUEUE)],  # type: ignore[no-untyped-call]
        task_default_queue=SCREENING_QUEUE,
        task_routes={
            SCREEN_TASK: {"queue": SCREENING_QUEUE},
            RECONCILE_TASK: {"queue": SCREENING_QUEUE},
            RETRAIN_TASK: {"queue": TRAINING_QUEUE},
            SEND_REPORTS_TASK: {"queue": SCREENING_QUEUE},
            HEATMAPS_TASK: {"queue": SCREENING_QUEUE},
        },
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.screening.reconcile_interval_s,
                # A reconcile older than its interval is superseded by the next one.
                "options": {"expires": settings.screening.reconcile_interval_s},
            },
            # Always scheduled: with reports off it marks new DICOM results `disabled`.
            "send-reports": {
                "task": SEND_REPORTS_TASK,
                "schedule": settings.pacs.report_interval_s,
                "options": {"expires": settings.pacs.report_interval_s},
            },
            "nightly-retrain": {
                "task": RETRAIN_TASK,
                "schedule": _cron(settings.training.retrain_cron),
                "kwargs": {"trigger": "nightly"},
            },
        },
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_channel_error_retry=True,
        timezone="UTC",
        enable_utc=True,
    )
    return app


def prepare_embedded_broker(settings: Settings) -> None:
    """Create the embedded broker's tables and queues now, from one process.

    `cxr-screen up` starts the screening worker, the training worker and beat at once;
    on a fresh install each would create kombu's tables and all but one fail with
    "table kombu_queue already exists", logged as a lost broker connection. Nothing to
    do for Redis.
    """
    if _embedded_broker_path(settings.storage.broker_url) is None:
        return
    app = create_app(settings, include=())
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue.bind(channel).declare()
