"""The active model of this process: loaded once, reloaded when another is promoted."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session, sessionmaker

from db.model_registry import get_active_model
from db.models import ModelVersion
from worker.accelerator import Precision, Xla
from worker.imaging import DecodeOptions
from worker.pipeline import (
    ModelInput,
    ModelUnavailableError,
    OperatingPoint,
    Predictor,
    Verdict,
    interpret,
    load_verified,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A registered model in memory: how it is run, and what its outputs mean."""

    version_id: int
    version: str
    input_size: int
    predictor: Predictor
    point: OperatingPoint

    @property
    def threshold(self) -> float:
        """The operating threshold recorded with every prediction."""
        return self.point.threshold

    def model_input(self, options: DecodeOptions) -> ModelInput:
        """How files become this model's input under the site's decoder options."""
        return ModelInput.of(self.input_size, options)

    def classify(self, batch: npt.NDArray[np.uint8]) -> list[Verdict]:
        """One forward pass for the batch, labelled at the model's operating threshold.

        Raises:
            NonFiniteOutputError: some probabilities are NaN or infinite.
        """
        return interpret(self.predictor(batch), self.point, self.predictor)


def load_model_version(
    row: ModelVersion,
    *,
    precision: Precision = "float32",
    xla: Xla = "auto",
    max_batch: int | None = None,
) -> LoadedModel:
    """Load the artifact of `row`, refusing one whose checksum does not match, and set it
    up to serve with `precision` and `xla` (see `worker.pipeline.Predictor.serving`)."""
    path = Path(row.artifact_path)
    keras_model = load_verified(path, checksum=row.checksum, name=row.version)
    expected = (None, row.input_size, row.input_size, 3)
    if tuple(keras_model.input_shape) != expected:
        raise ModelUnavailableError(
            f"model {row.version}: input shape {keras_model.input_shape} differs from the "
            f"registry's input size {row.input_size}; the artifact does not belong to this row"
        )
    predictor = Predictor.serving(
        keras_model, name=row.version, precision=precision, xla=xla, max_batch=max_batch
    )
    log.info(
        "loaded model %s (%s) from %s; precision %s, XLA %s",
        row.version,
        row.backbone,
        path,
        precision,
        "on (batches padded to powers of two)" if predictor.pad_batches else "off",
    )
    return LoadedModel(
        version_id=row.id,
        version=row.version,
        input_size=row.input_size,
        predictor=predictor,
        point=OperatingPoint(tuple(row.classes), row.positive_class, row.threshold),
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
            row = get_active_model(session)
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
