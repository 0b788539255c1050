"""One training run end to end: lock and run row, then load, skip check, train, save, gate,
register."""

from __future__ import annotations

import io
import logging
import os
import socket
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.locks import acquire_lock, release_lock
from db.models import RunStatus
from db.session import make_engine, make_session_factory, session_scope
from db.types import utcnow
from trainer.artifacts import SavedModel, new_version, save_trained
from trainer.data import LabelledDataset, load_dataset
from trainer.errors import DataError
from trainer.gate import (
    GateDecision,
    GateFolder,
    GateRule,
    ShiftedCandidate,
    gate_against_active,
    positive_scores,
)
from trainer.registered import ModelRef
from trainer.train import Progress, TrainConfig, TrainResult, train_model
from worker.decode_config import decode_options
from worker.imaging import DecodeOptions
from worker.settings import Settings

logger = logging.getLogger(__name__)

LOCK_NAME = "training"
# Longer than any run (a first run on 2 CPU cores takes under an hour); a crashed
# holder's lease expires after this and the next night can run.
LOCK_TTL = timedelta(hours=12)
FEATURE_CACHE_DIR = "feature_cache"


def cache_root(settings: Settings) -> Path:
    """Where base features are cached: beside the models they were computed for."""
    return settings.storage.model_dir / FEATURE_CACHE_DIR


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
    """Train on ``settings.training.data_dir`` unless nothing changed; register and gate the result.

    Returns a JSON-ready summary: ``status`` is ``succeeded``, ``skipped`` (the data
    and backbone equal the last trained model's) or ``busy`` (another run holds the
    lock); with ``version``, ``promoted``, ``metrics`` and ``gate`` after training.

    Raises:
        TrainerError: bad data or configuration (the run is recorded as failed).
    """
    if settings.training.data_dir is None:
        raise DataError(
            "CXR_DATA_DIR is not set; point it at a folder with train/<CLASS>/ and val/<CLASS>/"
        )
    config = config or TrainConfig.from_settings(settings)
    config.validate()
    engine = make_engine(settings.storage.database_url)
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


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The `training_runs` row one run writes to, and the log it collects."""

    factory: sessionmaker[Session]
    run_id: int
    trigger: str
    log: io.StringIO


@dataclass(frozen=True, slots=True)
class LatestModel:
    """What the skip check needs of the newest registered model, promoted or not."""

    version: str
    data_fingerprint: str | None
    backbone: str


@dataclass(frozen=True, slots=True)
class TrainingData:
    """The labelled folders of one run and their fingerprint."""

    dataset: LabelledDataset
    fingerprint: str


@dataclass(frozen=True, slots=True)
class RegistryState:
    """What the registry held when the run started."""

    latest: LatestModel | None
    active: ModelRef | None
    taken_versions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a run had nothing to train."""

    reason: str


@dataclass(frozen=True, slots=True)
class Registered:
    """The candidate's `model_versions` row, and whether the gate put it in service."""

    model_id: int
    promoted: bool


def _locked_run(
    *,
    factory: sessionmaker[Session],
    settings: Settings,
    trigger: str,
    force: bool,
    config: TrainConfig,
    gate_rule: GateRule | None,
    decode: DecodeOptions,
    progress: Progress | None,
) -> dict[str, Any]:
    data_dir = settings.training.data_dir
    assert data_dir is not None  # checked by run_training
    with captured_log() as log:
        with session_scope(factory) as session:
            run_id = model_registry.start_run(session, trigger=trigger).id
        logger.info("training run %d (%s) on %s", run_id, trigger, data_dir)
        record = RunRecord(factory, run_id, trigger, log)
        fingerprint: str | None = None
        try:
            data = load_training_data(data_dir)
            fingerprint = data.fingerprint
            state = registry_state(factory)
            skip = skip_check(data, state, config, force=force)
            if skip is not None:
                return record_skipped(record, skip, data)
            cache = cache_root(settings)
            result = train_candidate(data, config, cache=cache, decode=decode, progress=progress)
            saved = save_candidate(
                result, data, state, model_dir=settings.storage.model_dir, data_root=data_dir
            )
            decision = gate_candidate(
                result, data, state, cache=cache, decode=decode, rule=gate_rule
            )
            registered = register_candidate(record, result, saved, decision, data)
            return record_succeeded(record, result, saved, decision, registered, data)
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


def load_training_data(data_dir: Path) -> TrainingData:
    """Load the labelled folders and fingerprint them."""
    dataset = load_dataset(data_dir)
    fingerprint = dataset.fingerprint()
    logger.info(
        "data %s: train %s, %s %s",
        fingerprint[:12],
        dataset.train.counts(),
        dataset.evaluation.name,
        dataset.evaluation.counts(),
    )
    return TrainingData(dataset, fingerprint)


def registry_state(factory: sessionmaker[Session]) -> RegistryState:
    """The newest and the active model, and the version names already taken."""
    with session_scope(factory) as session:
        latest = model_registry.latest_model(session)
        active_row = model_registry.get_active_model(session)
        return RegistryState(
            latest=(
                None
                if latest is None
                else LatestModel(latest.version, latest.data_fingerprint, latest.backbone)
            ),
            active=ModelRef.of(active_row) if active_row is not None else None,
            taken_versions=frozenset(m.version for m in model_registry.list_models(session)),
        )


def skip_check(
    data: TrainingData, state: RegistryState, config: TrainConfig, *, force: bool
) -> Skip | None:
    """A reason not to train when the newest model saw these data with this backbone."""
    latest = state.latest
    if force or latest is None:
        return None
    if latest.data_fingerprint != data.fingerprint or latest.backbone != config.backbone:
        return None
    reason = (
        f"data unchanged since {latest.version} (fingerprint {data.fingerprint[:12]}); "
        "nothing to train"
    )
    logger.info("%s", reason)
    return Skip(reason)


def train_candidate(
    data: TrainingData,
    config: TrainConfig,
    *,
    cache: Path,
    decode: DecodeOptions,
    progress: Progress | None,
) -> TrainResult:
    """Extract features, fit and evaluate (see `trainer.train.train_model`)."""
    return train_model(data.dataset, config, cache_root=cache, decode=decode, progress=progress)


def save_candidate(
    result: TrainResult,
    data: TrainingData,
    state: RegistryState,
    *,
    model_dir: Path,
    data_root: Path,
) -> SavedModel:
    """Write the new version's folder: model, card and report."""
    now = utcnow()
    version = new_version(result.config.backbone, now=now, taken=set(state.taken_versions))
    return save_trained(
        result,
        model_dir=model_dir,
        version=version,
        data_fingerprint=data.fingerprint,
        data_root=data_root,
        created_at=now,
    )


def gate_candidate(
    result: TrainResult,
    data: TrainingData,
    state: RegistryState,
    *,
    cache: Path,
    decode: DecodeOptions,
    rule: GateRule | None,
) -> GateDecision:
    """Compare the candidate with the active model on the images it was evaluated on
    and on their shifted copy."""
    candidate_split = data.dataset.evaluation.without(
        Path(path) for path, _ in result.skipped_files
    )
    scores = positive_scores(
        result.true_idx,
        result.probabilities,
        classes=result.classes,
        positive_class=result.positive_class,
    )
    shifted = None
    if (
        result.shifted is not None
        and result.shifted_probabilities is not None
        and result.shifted_true_idx is not None
    ):
        shifted = ShiftedCandidate(
            result.shifted.pooled,
            positive_scores(
                result.shifted_true_idx,
                result.shifted_probabilities,
                classes=result.classes,
                positive_class=result.positive_class,
            ),
        )
    decision = gate_against_active(
        result.evaluation,
        scores,
        state.active,
        GateFolder(candidate_split, cache, decode),
        rule=rule,
        shifted=shifted,
    )
    logger.info("%s", decision.summary())
    return decision


def register_candidate(
    record: RunRecord,
    result: TrainResult,
    saved: SavedModel,
    decision: GateDecision,
    data: TrainingData,
) -> Registered:
    """Add the candidate's row and make it active or rejected, as the gate decided."""
    config = result.config
    metrics = {
        **result.evaluation.to_dict(),
        "evaluated_on": str(data.dataset.evaluation.root),
        "gate": decision.to_dict(),
        **_robustness(result),
    }
    with session_scope(record.factory) as session:
        row = model_registry.add_candidate(
            session,
            version=saved.version,
            artifact_path=str(saved.artifact.resolve()),
            checksum=saved.checksum,
            backbone=config.backbone,
            classes=list(result.classes),
            positive_class=result.positive_class,
            input_size=config.size(),
            threshold=result.threshold,
            base_weights_sha256=result.base_weights_sha256,
            data_fingerprint=data.fingerprint,
            metrics=metrics,
            notes=f"trained by run {record.run_id} ({record.trigger})",
        )
        model_id = row.id
        if decision.passed:
            model_registry.set_active(session, version=saved.version, notes=decision.summary())
        else:
            model_registry.reject(session, version=saved.version, reason=decision.summary())
    logger.info("%s registered as %s", saved.version, "active" if decision.passed else "rejected")
    return Registered(model_id, decision.passed)


def _robustness(result: TrainResult) -> dict[str, Any]:
    """The shifted-copy figures, the thresholds per folder and the calibration summary."""
    calibration = result.calibration

    def ece(stage: str, folder: str) -> float | None:
        value = (calibration.get(stage) or {}).get(folder) or {}
        return value.get("ece") if isinstance(value, dict) else None

    return {
        "shifted": result.shifted.to_dict() if result.shifted is not None else None,
        "thresholds": result.thresholds,
        "calibration": {
            "temperature": calibration.get("temperature"),
            "ece_before": {"evaluation": ece("before", "evaluation"),
                           "shifted": ece("before", "shifted")},
            "ece_after": {"evaluation": ece("after", "evaluation"),
                          "shifted": ece("after", "shifted")},
        },
    }  # fmt: skip


def record_skipped(record: RunRecord, skip: Skip, data: TrainingData) -> dict[str, Any]:
    """Close the run as skipped; the summary `run_training` returns."""
    with session_scope(record.factory) as session:
        model_registry.finish_run(
            session, run_id=record.run_id, status=RunStatus.SKIPPED, log=record.log.getvalue(),
            data_fingerprint=data.fingerprint,
        )  # fmt: skip
    return {"status": "skipped", "run_id": record.run_id, "reason": skip.reason,
            "data_fingerprint": data.fingerprint}  # fmt: skip


def record_succeeded(
    record: RunRecord,
    result: TrainResult,
    saved: SavedModel,
    decision: GateDecision,
    registered: Registered,
    data: TrainingData,
) -> dict[str, Any]:
    """Close the run as succeeded with its metrics; the summary `run_training` returns."""
    run_metrics = {
        "version": saved.version,
        "promoted": registered.promoted,
        "evaluation": result.evaluation.to_dict(),
        **_robustness(result),
        "gate": decision.to_dict(),
        "timings_s": result.timings,
        "features": result.extraction,
        "counts": result.counts,
        "skipped_files": len(result.skipped_files),
    }
    with session_scope(record.factory) as session:
        model_registry.finish_run(
            session,
            run_id=record.run_id,
            status=RunStatus.SUCCEEDED,
            log=record.log.getvalue(),
            metrics=run_metrics,
            data_fingerprint=data.fingerprint,
            model_version_id=registered.model_id,
        )
    return {"status": "succeeded", "run_id": record.run_id,
            "data_fingerprint": data.fingerprint, **run_metrics,
            "artifact": str(saved.artifact)}  # fmt: skip
