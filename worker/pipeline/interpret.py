"""Stage 3, interpret: class probabilities -> a verdict at the model's operating threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.pipeline.predict import NonFiniteOutputError, Predictor, Probabilities


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """What the registry says a model's outputs mean: its classes and where it says yes."""

    classes: tuple[str, ...]
    positive_class: str
    threshold: float

    @property
    def positive_index(self) -> int:
        """Column of the positive class in the model's output."""
        return self.classes.index(self.positive_class)

    @property
    def negative_label(self) -> str:
        """The label below the threshold: the other class of a binary model."""
        others = [c for c in self.classes if c != self.positive_class]
        return others[0] if len(others) == 1 else f"not {self.positive_class}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The model's answer for one image."""

    label: str
    probability: float  # of the positive class
    probabilities: dict[str, float]
    precision: str = "float32"  # what the forward pass computed in, recorded with it


def interpret(
    probabilities: Probabilities, point: OperatingPoint, predictor: Predictor
) -> list[Verdict]:
    """Label each row at the operating threshold; `predictor` is who computed them.

    Raises:
        NonFiniteOutputError: some probabilities are NaN or infinite (nothing is labelled:
            a NaN is below every threshold and would read as a negative finding).
    """
    values = probabilities.values
    broken = ~np.isfinite(values).all(axis=1)
    if broken.any():
        raise NonFiniteOutputError(
            f"model {predictor.name} gave non-finite probabilities for {int(broken.sum())} "
            f"of {len(values)} images (precision {predictor.precision}, XLA "
            f"{'on' if predictor.pad_batches else 'off'}); nothing was recorded and the batch "
            "goes back to the queue. If CXR_PRECISION or CXR_XLA is set, go back to "
            "float32 / auto and restart the worker; else check the artifact with "
            "`cxr-screen evaluate` and roll back with `cxr-screen models rollback`"
        )
    verdicts = []
    for row, in_float32 in zip(values, probabilities.fell_back, strict=True):
        positive = min(max(float(row[point.positive_index]), 0.0), 1.0)
        label = point.positive_class if positive >= point.threshold else point.negative_label
        by_class = {c: float(p) for c, p in zip(point.classes, row, strict=True)}
        precision = "float32" if in_float32 else predictor.precision
        verdicts.append(Verdict(label, positive, by_class, precision))
    return verdicts
