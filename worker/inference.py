"""Load the active model artifact once per process and reload it when another is promoted."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ModelStatus, ModelVersion
from worker.accelerator import Precision, Xla, answer_non_finite, for_inference

log = logging.getLogger(__name__)


class ModelUnavailableError(Exception):
    """The active model cannot be served (artifact missing or altered).

    Not the scans' fault: the batch is given back and retried, never marked failed.
    """


class NonFiniteOutputError(ModelUnavailableError):
    """The model gave NaN or infinite probabilities: a broken artifact or a numeric
    setting (16-bit precision, XLA) the model or device does not support.

    Nothing is recorded: a NaN is below every threshold and would read as a negative
    finding. The batch goes back to the queue and is retried like any model outage.
    """


@dataclass(frozen=True, slots=True)
class Verdict:
    """The model's answer for one image."""

    label: str
    probability: float  # of the positive class
    probabilities: dict[str, float]
    precision: str = "float32"  # what the forward pass computed in, recorded with it


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A Keras model in memory with what the registry says about it."""

    version_id: int
    version: str
    classes: tuple[str, ...]
    positive_class: str
    threshold: float
    input_size: int
    keras_model: Any
    pad_batches: bool = False
    max_batch: int | None = None
    precision: str = "float32"
    # The artifact's own float32 model when `keras_model` is a 16-bit rebuild of it:
    # images whose 16-bit answer is not finite are answered by this one instead.
    float32_model: Any = None

    def predict(
        self, batch: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Class probabilities for a batch of (N, size, size, 3) RGB images, 0-255, and
        which rows the float32 model answered instead of the 16-bit one.

        The backbone's preprocessing is inside the saved model, so the worker hands over
        plain pixels and cannot drift from what the trainer did. With `pad_batches`, the
        batch is padded with blank images (see `padded_size`) and the padding's rows
        dropped: an XLA-compiled model compiles once per input shape (seconds for
        VGG16), and partial batches would otherwise bring a new shape each time.
        """
        images = batch.astype(np.float32)
        count = len(images)
        if self.pad_batches and count > 0:
            padded = padded_size(count, self.max_batch)
            if padded != count:
                blank = np.zeros((padded - count, *images.shape[1:]), dtype=np.float32)
                images = np.concatenate([images, blank])
        probabilities = np.asarray(self.keras_model.predict_on_batch(images), dtype=np.float32)
        fell_back = np.zeros(count, dtype=np.bool_)
        if self.float32_model is not None:
            fell_back = answer_non_finite(probabilities, images, self.float32_model, rows=count)
            if fell_back.any():
                log.warning(
                    "model %s in %s gave non-finite probabilities for %d of %d images; "
                    "screened them in float32 instead (set CXR_PRECISION=float32 if this "
                    "recurs)",
                    self.version,
                    self.precision,
                    int(fell_back.sum()),
                    count,
                )
        return probabilities[:count], fell_back

    @property
    def positive_index(self) -> int:
        """Column of the positive class in `predict`'s output."""
        return self.classes.index(self.positive_class)

    @property
    def negative_label(self) -> str:
        """The label below the threshold: the other class of a binary model."""
        others = [c for c in self.classes if c != self.positive_class]
        return others[0] if len(others) == 1 else f"not {self.positive_class}"

    def classify(self, batch: npt.NDArray[np.uint8]) -> list[Verdict]:
        """One `predict` for the batch, labelled at the model's operating threshold.

        Raises:
            NonFiniteOutputError: some probabilities are NaN or infinite.
        """
        probabilities, fell_back = self.predict(batch)
        broken = ~np.isfinite(probabilities).all(axis=1)
        if broken.any():
            raise NonFiniteOutputError(
                f"model {self.version} gave non-finite probabilities for {int(broken.sum())} "
                f"of {len(batch)} images (precision {self.precision}, XLA "
                f"{'on' if self.pad_batches else 'off'}); nothing was recorded and the batch "
                "goes back to the queue. If CXR_PRECISION or CXR_XLA is set, go back to "
                "float32 / auto and restart the worker; else check the artifact with "
                "`cxr-screen evaluate` and roll back with `cxr-screen models rollback`"
            )
        verdicts = []
        for row, in_float32 in zip(probabilities, fell_back, strict=True):
            positive = min(max(float(row[self.positive_index]), 0.0), 1.0)
            label = self.positive_class if positive >= self.threshold else self.negative_label
            by_class = {c: float(p) for c, p in zip(self.classes, row, strict=True)}
            precision = "float32" if in_float32 else self.precision
            verdicts.append(Verdict(label, positive, by_class, precision))
        return verdicts


def padded_size(count: int, max_batch: int | None = None) -> int:
    """The batch shape `count` images are run at when padding: the next power of two,
    capped at the configured batch size (a full batch is never padded). A worker then
    compiles at most log2(CXR_BATCH_SIZE) + 2 shapes and never more than doubles a
    batch's work."""
    padded = 1 << (count - 1).bit_length()
    if max_batch is not None and count <= max_batch:
        return min(padded, max_batch)
    return padded


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_version(
    row: ModelVersion,
    *,
    precision: Precision = "float32",
    xla: Xla = "auto",
    max_batch: int | None = None,
) -> LoadedModel:
    """Load the artifact of `row`, refusing one whose checksum does not match, and set it
    up to serve with `precision` and `xla` (see `worker.accelerator.for_inference`)."""
    import keras

    path = Path(row.artifact_path)
    if not path.is_file():
        raise ModelUnavailableError(
            f"model {row.version}: artifact {path} is missing; restore it from backup or "
            "roll back with `cxr-screen models rollback`"
        )
    actual = file_sha256(path)
    if actual != row.checksum:
        raise ModelUnavailableError(
            f"model {row.version}: {path} has checksum {actual[:12]}..., the registry says "
            f"{row.checksum[:12]}...; the file was changed or corrupted: restore it or roll back"
        )
    keras_model = keras.models.load_model(path, compile=False)
    expected = (None, row.input_size, row.input_size, 3)
    if tuple(keras_model.input_shape) != expected:
        raise ModelUnavailableError(
            f"model {row.version}: input shape {keras_model.input_shape} differs from the "
            f"registry's input size {row.input_size}; the artifact does not belong to this row"
        )
    float32_model = keras_model
    keras_model = for_inference(keras_model, precision=precision, xla=xla)
    # Keras resolves `auto` here: TensorFlow compiles with XLA on a GPU, JAX always.
    compiled = bool(keras_model.jit_compile)
    if float32_model is not keras_model:
        float32_model.jit_compile = compiled  # the fallback runs the same padded shapes
    log.info(
        "loaded model %s (%s) from %s; precision %s, XLA %s",
        row.version,
        row.backbone,
        path,
        precision,
        "on (batches padded to powers of two)" if compiled else "off",
    )
    return LoadedModel(
        version_id=row.id,
        version=row.version,
        classes=tuple(row.classes),
        positive_class=row.positive_class,
        threshold=row.threshold,
        input_size=row.input_size,
        keras_model=keras_model,
        pad_batches=compiled,
        max_batch=max_batch,
        precision=precision,
        float32_model=float32_model if float32_model is not keras_model else None,
    )


class ModelCache:
    """The model this process serves; checks the registry before each batch."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        precision: Precision = "float32",
        xla: Xla = "auto",
        max_batch: int | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._precision: Precision = precision
        self._xla: Xla = xla
        self._max_batch = max_batch
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()

    def current(self) -> LoadedModel | None:
        """The active model, loading it if the registry changed since the last batch.

        Returns None when no model is active yet (scans then wait in the queue).
        """
        with self._session_factory() as session:
            row = session.scalars(
                select(ModelVersion).where(ModelVersion.status == ModelStatus.ACTIVE)
            ).first()
            if row is None:
                return None
            with self._lock:
                if self._loaded is None or self._loaded.version_id != row.id:
                    previous = self._loaded.version if self._loaded else None
                    self._loaded = load_model_version(
                        row, precision=self._precision, xla=self._xla, max_batch=self._max_batch
                    )
                    if previous:
                        log.info("switched model %s -> %s", previous, row.version)
                return self._loaded
