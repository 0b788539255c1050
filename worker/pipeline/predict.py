"""Stage 2, predict: a checksum-verified artifact, served with padding and precision fallback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.accelerator import Precision, Xla, answer_non_finite, for_inference
from worker.pipeline.digest import file_sha256
from worker.pipeline.prepare import Prepared

log = logging.getLogger(__name__)


class ModelUnavailableError(Exception):
    """A model cannot be used (its artifact is missing, altered or not what it claims).

    Not the scans' fault: a worker gives its batch back and retries, never marks it failed.
    """


class NonFiniteOutputError(ModelUnavailableError):
    """The model gave NaN or infinite probabilities: a broken artifact or a numeric
    setting (16-bit precision, XLA) the model or device does not support.

    Nothing is recorded: a NaN is below every threshold and would read as a negative
    finding. The batch goes back to the queue and is retried like any model outage.
    """


def load_verified(path: Path, *, checksum: str, name: str) -> Any:
    """The Keras model saved at `path`, refusing one whose bytes are not `checksum`.

    Loaded without its training configuration (`compile=False`): nothing here trains it.
    `name` is how messages call the model (its version).

    Raises:
        ModelUnavailableError: the file is missing or its SHA-256 differs.
    """
    import keras

    if not path.is_file():
        raise ModelUnavailableError(
            f"model {name}: artifact {path} is missing; restore it from backup or "
            "roll back with `cxr-screen models rollback`"
        )
    actual = file_sha256(path)
    if actual != checksum:
        raise ModelUnavailableError(
            f"model {name}: {path} has checksum {actual[:12]}..., the registry says "
            f"{checksum[:12]}...; the file was changed or corrupted: restore it or roll back"
        )
    return keras.models.load_model(path, compile=False)


def padded_size(count: int, max_batch: int | None = None) -> int:
    """The batch shape `count` images are run at when padding: the next power of two,
    capped at the configured batch size (a full batch is never padded). A worker then
    compiles at most log2(CXR_BATCH_SIZE) + 2 shapes and never more than doubles a
    batch's work."""
    padded = 1 << (count - 1).bit_length()
    if max_batch is not None and count <= max_batch:
        return min(padded, max_batch)
    return padded


@dataclass(frozen=True, slots=True)
class Probabilities:
    """Class probabilities per image, and which rows the float32 model answered."""

    values: npt.NDArray[np.float32]
    fell_back: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class Predictor:
    """A model set up to serve: the forward pass every caller runs on prepared images.

    Attributes:
        keras_model: The model run on each batch (a 16-bit rebuild when `precision` is).
        name: How log lines call it (its version).
        pad_batches: Pad batches to powers of two (an XLA-compiled model compiles once
            per input shape, seconds for VGG16, and partial batches bring new shapes).
        max_batch: The configured batch size, which padding never exceeds.
        precision: What `keras_model` computes in.
        float32_model: The artifact's own float32 model when `keras_model` is a 16-bit
            rebuild of it: images whose 16-bit answer is not finite are answered by it.
    """

    keras_model: Any
    name: str = "model"
    pad_batches: bool = False
    max_batch: int | None = None
    precision: str = "float32"
    float32_model: Any = None

    @classmethod
    def serving(
        cls,
        keras_model: Any,
        *,
        name: str,
        precision: Precision = "float32",
        xla: Xla = "auto",
        max_batch: int | None = None,
    ) -> Predictor:
        """`keras_model` (float32, as loaded) set up with `precision` and `xla`, as the
        worker runs it (see `worker.accelerator.for_inference`)."""
        served = for_inference(keras_model, precision=precision, xla=xla)
        # Keras resolves `auto` here: TensorFlow compiles with XLA on a GPU, JAX always.
        compiled = bool(served.jit_compile)
        if served is not keras_model:
            keras_model.jit_compile = compiled  # the fallback runs the same padded shapes
        return cls(
            keras_model=served,
            name=name,
            pad_batches=compiled,
            max_batch=max_batch,
            precision=precision,
            float32_model=keras_model if served is not keras_model else None,
        )

    def __call__(self, batch: npt.NDArray[Any]) -> Probabilities:
        """Class probabilities for (N, size, size, 3) RGB images, 0-255.

        The backbone's preprocessing is inside the saved model, so callers hand over
        plain pixels and cannot drift from what the trainer did. Padding rows are blank
        images, dropped from the answer.
        """
        images = np.asarray(batch, dtype=np.float32)
        count = len(images)
        if self.pad_batches and count > 0:
            padded = padded_size(count, self.max_batch)
            if padded != count:
                blank = np.zeros((padded - count, *images.shape[1:]), dtype=np.float32)
                images = np.concatenate([images, blank])
        values = np.asarray(self.keras_model.predict_on_batch(images), dtype=np.float32)
        fell_back = np.zeros(count, dtype=np.bool_)
        if self.float32_model is not None:
            fell_back = answer_non_finite(values, images, self.float32_model, rows=count)
            if fell_back.any():
                log.warning(
                    "model %s in %s gave non-finite probabilities for %d of %d images; "
                    "screened them in float32 instead (set CXR_PRECISION=float32 if this "
                    "recurs)",
                    self.name,
                    self.precision,
                    int(fell_back.sum()),
                    count,
                )
        return Probabilities(values[:count], fell_back)


def predict_prepared(predictor: Predictor, prepared: Sequence[Prepared]) -> Probabilities:
    """One forward pass over the prepared images, in order (none: an empty answer)."""
    if not prepared:
        outputs = int(predictor.keras_model.output_shape[-1])
        return Probabilities(np.zeros((0, outputs), np.float32), np.zeros(0, np.bool_))
    return predictor(np.stack([p.image for p in prepared]))
