"""Registered model versions as the trainer uses them: looked up, loaded and measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.models import ModelStatus, ModelVersion
from db.session import session_scope
from trainer.data import LabelledSplit
from trainer.errors import NoActiveModelError, RegistryError
from trainer.evaluate import Scored, evaluate_scored, score_model
from trainer.metrics import Evaluation
from trainer.site_shift import ShiftedFigures, score_shifted, shifted_folder, write_shifted
from worker.accelerator import Precision, Xla
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput, ModelUnavailableError, Predictor, load_verified


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
    input_size: int = 224
    # The base weights it was trained from (a fine-tuned model's own base hashes otherwise).
    base_weights_sha256: str | None = None

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
            input_size=row.input_size,
            base_weights_sha256=row.base_weights_sha256,
        )


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


def active_ref(factory: sessionmaker[Session]) -> ModelRef | None:
    """The active model, or None when there is none."""
    with session_scope(factory) as session:
        row = model_registry.get_active_model(session)
        return ModelRef.of(row) if row is not None else None


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
        batch_size=batch_size, trained_from=ref.base_weights_sha256,
    )  # fmt: skip
    evaluation = evaluate_scored(
        scored, classes=ref.classes, positive_class=ref.positive_class, threshold=ref.threshold
    )
    return evaluation, scored


def evaluate_shifted(
    ref: ModelRef,
    split: LabelledSplit,
    *,
    cache_root: Path,
    decode: DecodeOptions,
    precision: Precision = "float32",
    xla: Xla = "auto",
) -> ShiftedFigures:
    """Measure a registered model on the shifted copy of `split` (`trainer.site_shift`),
    written once under `cache_root` and kept: evaluating again costs only the model."""
    model_input = ModelInput.of(ref.input_size, decode)
    copy = write_shifted(split, shifted_folder(cache_root, model_input), model_input)
    _, scored = evaluate_ref(
        ref,
        copy.split(ref.classes),
        cache_root=cache_root,
        decode=decode,
        precision=precision,
        xla=xla,
    )
    return score_shifted(
        scored,
        classes=ref.classes,
        positive_class=ref.positive_class,
        threshold=ref.threshold,
        copy=copy,
    )
