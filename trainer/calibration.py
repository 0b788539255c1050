"""How far a model's probabilities are from the rates it is right at: reliability and ECE.

For the positive class of a screening model: films are put in equal-width bins of their
PNEUMONIA probability; in a calibrated model the share of films in a bin that have
pneumonia equals the bin's mean probability. The expected calibration error (ECE) is
the mean gap, weighted by how many films each bin holds (Guo et al. 2017, "On
Calibration of Modern Neural Networks").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

BINS = 10


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One probability bin: its range, how many films, mean probability, observed rate."""

    lower: float
    upper: float
    n: int
    mean_probability: float | None
    observed_rate: float | None


def reliability(
    probability: npt.ArrayLike, positive: npt.ArrayLike, bins: int = BINS
) -> list[ReliabilityBin]:
    """Equal-width bins of the positive-class probability (the last bin includes 1.0)."""
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(positive, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        out.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                n=n,
                mean_probability=float(p[members].mean()) if n else None,
                observed_rate=float(y[members].mean()) if n else None,
            )
        )
    return out


def expected_calibration_error(
    probability: npt.ArrayLike, positive: npt.ArrayLike, bins: int = BINS
) -> float | None:
    """The films-weighted mean |mean probability - observed rate| over the bins."""
    table = reliability(probability, positive, bins)
    total = sum(b.n for b in table)
    if total == 0:
        return None
    return sum(
        b.n / total * abs(float(b.mean_probability) - float(b.observed_rate))
        for b in table
        if b.n and b.mean_probability is not None and b.observed_rate is not None
    )


def calibration_figures(
    probabilities: npt.ArrayLike, truth: npt.ArrayLike, positive_index: int
) -> dict[str, object]:
    """ECE and the reliability table of a scored split (class probabilities, true indices)."""
    p = np.asarray(probabilities)[:, positive_index]
    y = np.asarray(truth) == positive_index
    return {
        "ece": expected_calibration_error(p, y),
        "bins": [asdict(b) for b in reliability(p, y)],
    }
