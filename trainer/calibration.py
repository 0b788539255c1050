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


# The temperatures a fit may choose: wide enough for a head squeezed towards 0.5 (T < 1)
# or an over-confident one (T > 1), narrow enough that a degenerate split (every film
# separable) cannot drive T to zero and the probabilities to exactly 0 and 1.
TEMPERATURE_RANGE = (0.05, 20.0)


def tempered(probabilities: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float32]:
    """Class probabilities with the logits divided by `temperature`.

    The logits are recovered as log-probabilities: they differ from the head's own by a
    constant per film, which the softmax cancels, so this equals the head with its last
    dense layer divided by `temperature` (`trainer.model.temper_head`).
    """
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0))
    scaled = logits / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    out: npt.NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def negative_log_likelihood(
    probabilities: npt.ArrayLike, truth: npt.ArrayLike, temperature: float
) -> float:
    """Mean -log p(true class) after tempering."""
    p = tempered(probabilities, temperature).astype(np.float64)
    rows = np.arange(p.shape[0])
    return float(-np.mean(np.log(np.clip(p[rows, np.asarray(truth)], 1e-12, 1.0))))


def fit_temperature(probabilities: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """The temperature minimising the negative log-likelihood of `truth` (Guo et al. 2017).

    One parameter, so a golden-section search on log T is exact enough and needs no
    optimiser; the NLL is convex in 1/T, so the search cannot stop at a wrong minimum.
    """
    low, high = (float(np.log(t)) for t in TEMPERATURE_RANGE)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0

    def loss(log_t: float) -> float:
        return negative_log_likelihood(probabilities, truth, float(np.exp(log_t)))

    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(60):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return float(np.exp((a + b) / 2.0))
