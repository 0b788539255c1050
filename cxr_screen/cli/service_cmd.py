"""`cxr-screen worker` and `cxr-screen beat`: the long-running Celery processes."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cxr_screen.cli.common import settings_or_fail
from cxr_screen.task_modules import task_modules
from worker.accelerator import cpu_has_amx_bf16, describe_devices, gpu_count, precision_advice
from worker.celery_app import SCREENING_QUEUE, TRAINING_QUEUE, create_app
from worker.logs import configure_logging


def worker(
    queues: Annotated[
        str,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated queues: `screening` (scans), `training` (nightly "
            "retraining), or both. Run training on one host only.",
        ),
    ] = SCREENING_QUEUE,
    name: Annotated[
        str | None, typer.Option(help="Worker node name (default: QUEUE@HOSTNAME).")
    ] = None,
    gpu: Annotated[
        int | None,
        typer.Option(
            help="Pin this worker to one GPU (sets CUDA_VISIBLE_DEVICES); run one worker per GPU."
        ),
    ] = None,
) -> None:
    """Run a worker process that screens batches of scans (and/or retrains the model).

    It uses a single process with TensorFlow's own threads (Celery's `solo` pool):
    TensorFlow is not fork-safe, and one process per GPU keeps one model per device.
    The active model is loaded on the first batch and re-checked before every batch,
    so a promoted model is used without a restart. Stop with Ctrl-C or SIGTERM: the
    current batch finishes first.
    """
    import os

    settings = settings_or_fail()
    configure_logging(settings.log_level)
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = set(wanted) - {SCREENING_QUEUE, TRAINING_QUEUE}
    if unknown or not wanted:
        raise typer.BadParameter(
            f"unknown queue(s) {sorted(unknown)}: use screening, training or both",
            param_hint="--queues",
        )
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    # Growing GPU memory on demand lets the trainer and a worker share a card.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    include = task_modules(wanted)
    app = create_app(settings, include=include, background=SCREENING_QUEUE not in wanted)
    node = name or f"{'+'.join(wanted)}@%h"
    log = logging.getLogger(__name__)
    log.info(
        "worker %s consuming %s; %s; precision %s, XLA %s",
        node,
        ",".join(wanted),
        describe_devices(),
        settings.screening.precision,
        settings.screening.xla,
    )
    if SCREENING_QUEUE in wanted:
        import keras

        advice = precision_advice(
            settings.screening.precision,
            has_gpu=gpu_count() > 0,
            amx_bf16=cpu_has_amx_bf16(),
            backend=keras.backend.backend(),
        )
        if advice:
            log.info("%s", advice)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            f"--queues={','.join(wanted)}",
            f"--hostname={node}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def beat() -> None:
    """Run the scheduler: reconcile every minute, retrain nightly. Run exactly one."""
    settings = settings_or_fail()
    configure_logging(settings.log_level)
    settings.storage.var_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, include=())
    app.start(
        [
            "beat",
            f"--loglevel={settings.log_level}",
            f"--schedule={settings.storage.var_dir / 'beat-schedule'}",
        ]
    )
