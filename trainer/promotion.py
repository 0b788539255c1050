"""Compare models on the same labelled folder, promote through the gate, roll back."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.models import ModelStatus, ModelVersion
from db.session import session_scope
from trainer.data import LabelledSplit
from trainer.errors import NoActiveModelError, RegistryError
from trainer.evaluate import Scored, evaluate_scored, score_model
from trainer.metrics import Evaluation
from trainer.registry import GateDecision, GateRule, apply_gate
from worker.accelerator import Precision, Xla
from worker.imaging import DecodeOptions
from worker.pipeline import ModelUnavailableError, Predictor, load_verified

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What scoring needs from a `model_versions` row, detached from the session."""

    version: str
    artifact_path: Path
    checksum: str
    backbone: str
    classes: tuple[str, ...]
    positive_class: str
    threshold: float
    status: ModelStatus

    @classmethod
    def of(cls, row: ModelVersion) -> ModelRef:
        """Copy the fields of a row."""
        return cls(
            version=row.version,
            artifact_path=Path(row.artifact_path),
            checksum=row.checksum,
            backbone=row.backbone,
            classes=tuple(row.classes),
            positive_class=row.positive_class,
            threshold=row.threshold,
            status=row.status,
        )


def evaluate_ref(
    ref: ModelRef,
    split: LabelledSplit,
    *,
    cache_root: Path,
    decode: DecodeOptions,
    batch_size: int = 32,
    precision: Precision = "float32",
    xla: Xla = "auto",
) -> tuple[Evaluation, Scored]:
    """Load a registered model (checksum verified) and measure it on `split`, served as a
    worker with that CXR_PRECISION and CXR_XLA serves it: the whole model in 16 bits
    (the feature cache holds float32 features), and any image whose 16-bit answer is not
    finite answered by the float32 model instead (counted in `Scored.fell_back`)."""
    try:
        loaded = load_verified(ref.artifact_path, checksum=ref.checksum, name=ref.version)
    except ModelUnavailableError as exc:
        raise RegistryError(str(exc)) from None
    predictor = Predictor.serving(loaded, name=ref.version, precision=precision, xla=xla)
    scored = score_model(
        predictor, split, backbone=ref.backbone, cache_root=cache_root, decode=decode,
        batch_size=batch_size,
    )  # fmt: skip
    evaluation = evaluate_scored(
        scored, classes=ref.classes, positive_class=ref.positive_class, threshold=ref.threshold
    )
    return evaluation, scored


def scores_of(evaluation: Evaluation, scored: Scored) -> tuple[np.ndarray, np.ndarray]:
    """(is_positive, positive-class probability) for the gate's matched comparison."""
    positive = evaluation.classes.index(evaluation.positive_class)
    truth = scored.split.label_indices(evaluation.classes) == positive
    return truth, scored.probabilities[:, positive]


def gate_against_active(
    candidate: Evaluation,
    candidate_scores: tuple[np.ndarray, np.ndarray],
    active: ModelRef | None,
    split: LabelledSplit,
    *,
    cache_root: Path,
    decode: DecodeOptions,
    rule: GateRule | None = None,
) -> GateDecision:
    """Re-evaluate the active model on `split` and apply the gate."""
    active_eval: Evaluation | None = None
    if active is not None:
        if active.classes != candidate.classes:
            # The active model cannot even be scored on this folder's labels.
            decision = apply_gate(candidate, None, candidate_scores=candidate_scores, rule=rule)
            decision.passed = False
            decision.reasons.append(
                f"active model {active.version} has classes {list(active.classes)}, the "
                f"candidate {list(candidate.classes)}; promote by hand with --force"
            )
            return decision
        active_eval, _ = evaluate_ref(active, split, cache_root=cache_root, decode=decode)
        logger.info(
            "active %s on the same folder: AUC %.4f, sensitivity %.4f, specificity %.4f",
            active.version,
            active_eval.auc or float("nan"),
            active_eval.sensitivity or float("nan"),
            active_eval.specificity or float("nan"),
        )
    return apply_gate(candidate, active_eval, candidate_scores=candidate_scores, rule=rule)


def find_ref(factory: sessionmaker[Session], version: str | None) -> ModelRef:
    """The named version, or the active one when `version` is None."""
    with session_scope(factory) as session:
        if version is None:
            row = model_registry.get_active_model(session)
            if row is None:
                raise NoActiveModelError(
                    "there is no active model; train one with `cxr-screen train` or name a "
                    "version with --model"
                )
        else:
            row = model_registry.get_model(session, version=version)
            if row is None:
                raise RegistryError(f"no model version {version!r}; see `cxr-screen models list`")
        return ModelRef.of(row)


def promote(
    factory: sessionmaker[Session],
    *,
    version: str,
    split: LabelledSplit | None,
    cache_root: Path,
    decode: DecodeOptions,
    force: bool = False,
    rule: GateRule | None = None,
) -> GateDecision | None:
    """Make `version` active if it passes the gate on `split` (or unconditionally with
    `force`). Returns the gate's decision (None when forced); raises when it fails."""
    target = find_ref(factory, version)
    if target.status is ModelStatus.ACTIVE:
        raise RegistryError(f"{version} is already the active model")
    decision: GateDecision | None = None
    if not force:
        if split is None:
            raise RegistryError(
                "the gate needs the evaluation folder: set CXR_DATA_DIR (its val/ or test/ "
                "is used) or pass --force to skip the gate"
            )
        with session_scope(factory) as session:
            row = model_registry.get_active_model(session)
            active = ModelRef.of(row) if row is not None else None
        candidate, scored = evaluate_ref(target, split, cache_root=cache_root, decode=decode)
        decision = gate_against_active(
            candidate, scores_of(candidate, scored), active, split,
            cache_root=cache_root, decode=decode, rule=rule,
        )  # fmt: skip
        if not decision.passed:
            raise RegistryError(
                f"{version} was not promoted ({decision.summary()}); pass --force to promote "
                "it anyway"
            )
    with session_scope(factory) as session:
        note = "promoted by hand" + (" (gate skipped with --force)" if force else "")
        model_registry.set_active(session, version=version, notes=note)
    logger.info("%s is now the active model", version)
    return decision


def rollback(factory: sessionmaker[Session]) -> tuple[str, str]:
    """Reactivate the previously active model; the current one is marked rejected.

    Returns:
        (the version rolled back, the version now active).
    """
    with session_scope(factory) as session:
        current = model_registry.get_active_model(session)
        if current is None:
            raise NoActiveModelError("there is no active model to roll back")
        previous = model_registry.previous_active(session)
        if previous is None:
            raise RegistryError(
                f"{current.version} is the only model that was ever active; nothing to roll back to"
            )
        old, new = current.version, previous.version
        model_registry.reject(session, version=old, reason=f"rolled back to {new}")
        model_registry.set_active(session, version=new, notes=f"reactivated by rollback of {old}")
    logger.info("rolled back %s; %s is active again", old, new)
    return old, new
