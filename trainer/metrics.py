"""Screening metrics in numpy: ROC AUC, sensitivity, specificity, confusion, threshold choice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

THRESHOLD_RULE = (
    "the highest threshold whose sensitivity on the evaluation folder is at least "
    "{target:.2f} (a positive is called when p({positive}) >= threshold), placed midway "
    "to the next lower score; screening misses cost more than recalls"
)
SHIFTED_THRESHOLD_RULE = (
    "the highest threshold whose sensitivity is at least {target:.2f} both on the "
    "evaluation folder and on its shifted copy (trainer.site_shift: the same films under "
    "8 site changes), a positive being called when p({positive}) >= threshold, placed "
    "midway to the next lower score on the folder that decides it"
)


def roc_auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    Raises:
        ValueError: if `y_true` lacks positives or negatives (AUC is undefined).
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative example")
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Tied scores share the mean of the ranks they span.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    rank_sum = float(ranks[y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_curve(
    y_true: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(false positive rates, true positive rates, thresholds), thresholds descending.

    The first point is (0, 0) at threshold +inf; a score >= threshold is a positive call.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[distinct].astype(np.float64)
    fps = (distinct + 1 - tps).astype(np.float64)
    n_pos = max(float(y.sum()), 1.0)
    n_neg = max(float((~y).sum()), 1.0)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thresholds


def screening_threshold(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, min_sensitivity: float = 0.95
) -> float:
    """The highest threshold reaching `min_sensitivity`, midway to the next lower score.

    Maximises specificity subject to the sensitivity a screening service promises. The
    midpoint leaves a margin on both sides instead of sitting on one example's score.
    """
    if not 0.0 < min_sensitivity <= 1.0:
        raise ValueError(f"min_sensitivity {min_sensitivity} is not in (0, 1]")
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if not y.any():
        raise ValueError("a screening threshold needs at least one positive example")
    positives = np.sort(s[y])[::-1]
    # Calling the k highest-scoring positives (ties included) reaches the target.
    k = int(np.ceil(min_sensitivity * positives.size - 1e-9))
    cut = float(positives[max(k, 1) - 1])
    lower = s[s < cut]
    threshold = (cut + float(lower.max())) / 2.0 if lower.size else cut
    return float(np.clip(threshold, 0.0, 1.0))


def sensitivity_at_specificity(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, specificity: float
) -> float:
    """The best sensitivity any threshold reaches while keeping at least `specificity`."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    allowed = fpr <= (1.0 - specificity) + 1e-12
    return float(tpr[allowed].max())


def youden_threshold(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """The threshold maximising sensitivity + specificity - 1 (reported for comparison)."""
    fpr, tpr, thresholds = roc_curve(y_true, scores)
    best = int(np.argmax(tpr[1:] - fpr[1:])) + 1
    return float(np.clip(thresholds[best], 0.0, 1.0))


def confusion_matrix(true_idx: npt.ArrayLike, pred_idx: npt.ArrayLike, n_classes: int) -> IntArray:
    """Counts with true classes as rows and predicted classes as columns."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(
        matrix, (np.asarray(true_idx, dtype=np.int64), np.asarray(pred_idx, dtype=np.int64)), 1
    )
    return matrix


def predict_labels(probabilities: npt.ArrayLike, *, positive: int, threshold: float) -> IntArray:
    """Class indices: the positive class when its probability reaches `threshold`,
    otherwise the most probable of the other classes."""
    p = np.asarray(probabilities, dtype=np.float64)
    others = p.copy()
    others[:, positive] = -np.inf
    fallback = np.argmax(others, axis=1)
    return np.where(p[:, positive] >= threshold, positive, fallback).astype(np.int64)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass(frozen=True, slots=True)
class ClassFigures:
    """Precision, recall (sensitivity for that class) and F1 of one class."""

    support: int
    precision: float | None
    recall: float | None
    f1: float | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything measured for one model on one labelled folder at one threshold."""

    classes: tuple[str, ...]
    positive_class: str
    threshold: float
    n: int
    accuracy: float
    auc: float | None
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    balanced_accuracy: float | None
    confusion: list[list[int]]
    per_class: dict[str, ClassFigures]
    at_half: dict[str, float | None] = field(default_factory=dict)
    youden_threshold: float | None = None
    roc: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_dict(self, *, with_roc: bool = False) -> dict[str, Any]:
        """JSON-ready figures (the ROC points only when asked: they are long)."""
        data: dict[str, Any] = {
            "classes": list(self.classes),
            "positive_class": self.positive_class,
            "threshold": self.threshold,
            "n": self.n,
            "accuracy": self.accuracy,
            "auc": self.auc,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "ppv": self.ppv,
            "npv": self.npv,
            "balanced_accuracy": self.balanced_accuracy,
            "confusion_matrix": self.confusion,
            "per_class": {
                name: {
                    "support": f.support,
                    "precision": f.precision,
                    "recall": f.recall,
                    "f1": f.f1,
                }
                for name, f in self.per_class.items()
            },
            "at_threshold_0.5": self.at_half,
            "youden_threshold": self.youden_threshold,
        }
        if with_roc:
            data["roc"] = self.roc
        return data


def _binary_figures(
    y: npt.NDArray[np.bool_], called: npt.NDArray[np.bool_]
) -> dict[str, float | None]:
    tp = float(np.sum(y & called))
    fn = float(np.sum(y & ~called))
    tn = float(np.sum(~y & ~called))
    fp = float(np.sum(~y & called))
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def evaluate_probabilities(
    probabilities: npt.ArrayLike,
    true_idx: npt.ArrayLike,
    *,
    classes: Sequence[str],
    positive_class: str,
    threshold: float,
) -> Evaluation:
    """Score predicted probabilities against true class indices.

    Sensitivity and specificity are for `positive_class` against all others (any
    pneumonia vs no pneumonia); AUC is of the positive-class probability.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(true_idx, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != len(classes) or p.shape[0] != t.shape[0]:
        raise ValueError(
            f"probabilities of shape {p.shape} do not match {t.shape[0]} labels and "
            f"{len(classes)} classes"
        )
    if p.shape[0] == 0:
        raise ValueError("no examples to evaluate")
    positive = list(classes).index(positive_class)
    predicted = predict_labels(p, positive=positive, threshold=threshold)
    matrix = confusion_matrix(t, predicted, len(classes))
    y = t == positive
    score = p[:, positive]
    binary = _binary_figures(y, predicted == positive)
    half = _binary_figures(y, score >= 0.5)
    auc: float | None
    youden: float | None
    roc: dict[str, list[float]] = {}
    if y.any() and (~y).any():
        auc = roc_auc(y, score)
        youden = youden_threshold(y, score)
        fpr, tpr, thr = roc_curve(y, score)
        roc = {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": np.minimum(thr, 1.0).tolist(),
        }
    else:
        auc = youden = None
    half["auc"] = auc
    per_class: dict[str, ClassFigures] = {}
    for i, name in enumerate(classes):
        tp = float(matrix[i, i])
        precision = _ratio(tp, float(matrix[:, i].sum()))
        recall = _ratio(tp, float(matrix[i, :].sum()))
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else None
        )
        per_class[name] = ClassFigures(int(matrix[i, :].sum()), precision, recall, f1)
    sens, spec = binary["sensitivity"], binary["specificity"]
    return Evaluation(
        classes=tuple(classes),
        positive_class=positive_class,
        threshold=float(threshold),
        n=int(t.shape[0]),
        accuracy=float(np.mean(predicted == t)),
        auc=auc,
        sensitivity=sens,
        specificity=spec,
        ppv=binary["ppv"],
        npv=binary["npv"],
        balanced_accuracy=(sens + spec) / 2 if sens is not None and spec is not None else None,
        confusion=matrix.tolist(),
        per_class=per_class,
        at_half=half,
        youden_threshold=youden,
        roc=roc,
    )
