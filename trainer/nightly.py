"""One training run end to end: lock, run row, skip if unchanged, train, register, gate."""

from __future__ import annotations

import io
import logging
import os
import socket
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from db import model_registry
from db.locks import acquire_lock, release_lock
from db.models import RunStatus
from db.session import make_engine, make_session_factory, session_scope
from db.types import utcnow
from trainer.artifacts import new_version, save_trained
from trainer.data import load_dataset
from trainer.errors import DataError
from trainer.gate import GateFolder, GateRule, gate_against_active
from trainer.registered import ModelRef
from trainer.train import Progress, TrainConfig, train_model
from worker.decode_config import decode_options
from worker.imaging import DecodeOptions
from worker.settings import Settings

logger = logging.getLogger(__name__)

LOCK_NAME = "training"
# Longer than any run (a first run on 2 CPU cores takes under an hour); a crashed
# holder's lease expires after this and the next night can run.
LOCK_TTL = timedelta(hours=12)
FEATURE_CACHE_DIR = "feature_cache"


def train_config(settings: Settings, **overrides: Any) -> TrainConfig:
    """The training configuration a site's settings describe, with explicit overrides."""
    config = TrainConfig(
        backbone=settings.backbone,
        base_weights=settings.base_weights,
        epochs=settings.train_epochs,
        batch_size=settings.train_batch_size,
        online_augmentation=settings.online_augmentation,
    )
    return replace(config, **overrides) if overrides else config


def cache_root(settings: Settings) -> Path:
    """Where base features are cached: beside the models they were computed for."""
    return settings.model_dir / FEATURE_CACHE_DIR


@contextmanager
def captured_log() -> Iterator[io.StringIO]:
    """Collect the trainer's log lines of one run, for the `training_runs.log` column."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    trainer_logger = logging.getLogger("trainer")
    previous_level = trainer_logger.level
    if trainer_logger.getEffectiveLevel() > logging.INFO:
        trainer_logger.setLevel(logging.INFO)
    trainer_logger.addHandler(handler)
    try:
        yield buffer
    finally:
        trainer_logger.removeHandler(handler)
        trainer_logger.setLevel(previous_level)


def run_training(
    settings: Settings,
    *,
    trigger: str = "manual",
    force: bool = False,
    config: TrainConfig | None = None,
    gate_rule: GateRule | None = None,
    decode: DecodeOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on ``settings.data_dir`` unless nothing changed; register and gate the result.

    Returns a JSON-ready summary: ``status`` is ``succeeded``, ``skipped`` (the data
    and backbone equal the last trained model's) or ``busy`` (another run holds the
    lock); with ``version``, ``promoted``, ``metrics`` and ``gate`` after training.

    Raises:
        TrainerError: bad data or configuration (the run is recorded as failed).
    """
    if settings.data_dir is None:
        raise DataError(
            "CXR_DATA_DIR is not set; point it at a folder with train/<CLASS>/ and val/<CLASS>/"
        )
    config = config or train_config(settings)
    config.validate()
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not acquire_lock(factory, name=LOCK_NAME, holder=holder, ttl=LOCK_TTL):
            with session_scope(factory) as session:
                run = model_registry.start_run(session, trigger=trigger)
                model_registry.finish_run(
                    session,
                    run_id=run.id,
                    status=RunStatus.SKIPPED,
                    log="another training run holds the training lock; not started",
                )
                run_id = run.id
            logger.warning("another training run holds the lock; run %d skipped", run_id)
            return {"status": "busy", "run_id": run_id}
        try:
            return _locked_run(
                factory=factory,
                settings=settings,
                trigger=trigger,
                force=force,
                config=config,
                gate_rule=gate_rule,
                decode=decode if decode is not None else decode_options(settings),
                progress=progress,
            )
        finally:
            release_lock(factory, name=LOCK_NAME, holder=holder)
    finally:
        engine.dispose()


def run_nightly(settings: Settings) -> dict[str, Any]:
    """What the nightly beat schedule runs: a training run that skips unchanged data."""
    return run_training(settings, trigger="nightly")


def _locked_run(
    *,
    factory: Any,
    settings: Settings,
    trigger: str,
    force: bool,
    config: TrainConfig,
    gate_rule: GateRule | None,
    decode: DecodeOptions,
    progress: Progress | None,
) -> dict[str, Any]:
    data_dir = settings.data_dir
    assert data_dir is not None  # checked by run_training
    with captured_log() as log:
        with session_scope(factory) as session:
            run_id = model_registry.start_run(session, trigger=trigger).id
        logger.info("training run %d (%s) on %s", run_id, trigger, data_dir)
        fingerprint: str | None = None
        try:
            dataset = load_dataset(data_dir)
            fingerprint = dataset.fingerprint()
            logger.info(
                "data %s: train %s, %s %s",
                fingerprint[:12],
                dataset.train.counts(),
                dataset.evaluation.name,
                dataset.evaluation.counts(),
            )
            with session_scope(factory) as session:
                latest = model_registry.latest_model(session)
                active_row = model_registry.get_active_model(session)
                active = ModelRef.of(active_row) if active_row is not None else None
                taken = {m.version for m in model_registry.list_models(session)}
            if (
                not force
                and latest is not None
                and latest.data_fingerprint == fingerprint
                and latest.backbone == config.backbone
            ):
                reason = (
                    f"data unchanged since {latest.version} (fingerprint {fingerprint[:12]}); "
                    "nothing to train"
                )
                logger.info("%s", reason)
                with session_scope(factory) as session:
                    model_registry.finish_run(
                        session, run_id=run_id, status=RunStatus.SKIPPED, log=log.getvalue(),
                        data_fingerprint=fingerprint,
                    )  # fmt: skip
                return {"status": "skipped", "run_id": run_id, "reason": reason,
                        "data_fingerprint": fingerprint}  # fmt: skip

            cache = cache_root(settings)
            result = train_model(
                dataset, config, cache_root=cache, decode=decode, progress=progress
            )
            now = utcnow()
            version = new_version(config.backbone, now=now, taken=taken)
            saved = save_trained(
                result,
                model_dir=settings.model_dir,
                version=version,
                data_fingerprint=fingerprint,
                data_root=data_dir,
                created_at=now,
            )
            candidate_split = dataset.evaluation.without(
                Path(path) for path, _ in result.skipped_files
            )
            positive = result.classes.index(result.positive_class)
            truth = result.true_idx == positive
            decision = gate_against_active(
                result.evaluation,
                (truth, result.probabilities[:, positive]),
                active,
                GateFolder(candidate_split, cache, decode),
                rule=gate_rule,
            )
            logger.info("%s", decision.summary())
            metrics = {
                **result.evaluation.to_dict(),
                "evaluated_on": str(dataset.evaluation.root),
                "gate": decision.to_dict(),
            }
            with session_scope(factory) as session:
                row = model_registry.add_candidate(
                    session,
                    version=version,
                    artifact_path=str(saved.artifact.resolve()),
                    checksum=saved.checksum,
                    backbone=config.backbone,
                    classes=list(result.classes),
                    positive_class=result.positive_class,
                    input_size=config.size(),
                    threshold=result.threshold,
                    base_weights_sha256=result.base_weights_sha256,
                    data_fingerprint=fingerprint,
                    metrics=metrics,
                    notes=f"trained by run {run_id} ({trigger})",
                )
                model_id = row.id
                if decision.passed:
                    model_registry.set_active(session, version=version, notes=decision.summary())
                else:
                    model_registry.reject(session, version=version, reason=decision.summary())
            logger.info("%s registered as %s", version, "active" if decision.passed else "rejected")
            run_metrics = {
                "version": version,
                "promoted": decision.passed,
                "evaluation": result.evaluation.to_dict(),
                "gate": decision.to_dict(),
                "timings_s": result.timings,
                "features": result.extraction,
                "counts": result.counts,
                "skipped_files": len(result.skipped_files),
            }
            with session_scope(factory) as session:
                model_registry.finish_run(
                    session,
                    run_id=run_id,
                    status=RunStatus.SUCCEEDED,
                    log=log.getvalue(),
                    metrics=run_metrics,
                    data_fingerprint=fingerprint,
                    model_version_id=model_id,
                )
            return {"status": "succeeded", "run_id": run_id, "data_fingerprint": fingerprint,
                    **run_metrics, "artifact": str(saved.artifact)}  # fmt: skip
        except BaseException as exc:
            logger.error("training run %d failed: %s", run_id, exc)
            with session_scope(factory) as session:
                model_registry.finish_run(
                    session,
                    run_id=run_id,
                    status=RunStatus.FAILED,
                    log=log.getvalue() + traceback.format_exc(),
                    data_fingerprint=fingerprint,
                    error=f"{type(exc).__name__}: {exc}",
                )
            raise
