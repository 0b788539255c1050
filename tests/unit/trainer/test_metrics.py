"""Metrics in numpy against brute-force definitions and hand-worked examples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainer.metrics import (
    confusion_matrix,
    evaluate_probabilities,
    predict_labels,
    roc_auc,
    roc_curve,
    screening_threshold,
    sensitivity_at_specificity,
    youden_threshold,
)


def _pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_pairwise_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=60)
    y[:2] = [0, 1]
    s = np.round(rng.uniform(size=60) + 0.4 * y, 1)  # rounding makes ties
    assert roc_auc(y, s) == pytest.approx(_pairwise_auc(y, s))


def test_auc_extremes_and_undefined() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        roc_auc([1, 1], [0.2, 0.3])


def test_roc_curve_points() -> None:
    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert thr[0] == np.inf
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(np.trapezoid(tpr, fpr), roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]))


def test_screening_threshold_is_the_highest_that_reaches_the_sensitivity() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(100), np.ones(100)].astype(int)
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.15), 0, 1)
    t = screening_threshold(y, s, min_sensitivity=0.95)
    sensitivity = np.mean(s[y == 1] >= t)
    assert sensitivity >= 0.95
    # Any higher threshold that changes a call loses sensitivity below the target.
    higher = np.sort(s[s > t])[0]
    assert np.mean(s[y == 1] >= higher + 1e-12) < 0.95
    # It sits strictly between two scores, not on one.
    assert not np.any(np.isclose(s, t))


def test_screening_threshold_reaches_full_sensitivity_when_asked() -> None:
    t = screening_threshold([0, 1, 1, 0], [0.2, 0.3, 0.9, 0.6], min_sensitivity=1.0)
    assert t == pytest.approx(0.25)


def test_sensitivity_at_specificity_and_youden() -> None:
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9]
    assert sensitivity_at_specificity(y, s, specificity=1.0) == 0.5
    assert sensitivity_at_specificity(y, s, specificity=0.75) == 1.0
    assert youden_threshold(y, s) == pytest.approx(0.4)


def test_confusion_and_labels_for_more_than_two_classes() -> None:
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1]])
    labels = predict_labels(p, positive=2, threshold=0.4)
    np.testing.assert_array_equal(labels, [0, 2, 2, 1])
    matrix = confusion_matrix([0, 2, 0, 1], labels, 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_evaluation_by_hand() -> None:
    # 4 NORMAL, 6 PNEUMONIA; at 0.5: TP 5, FN 1, TN 3, FP 1.
    pos = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.2])
    neg = np.array([0.1, 0.3, 0.4, 0.65])
    scores = np.r_[neg, pos]
    probabilities = np.c_[1 - scores, scores]
    truth = np.r_[np.zeros(4), np.ones(6)].astype(int)
    ev = evaluate_probabilities(
        probabilities, truth, classes=("NORMAL", "PNEUMONIA"), positive_class="PNEUMONIA",
        threshold=0.5,
    )  # fmt: skip
    assert ev.confusion == [[3, 1], [1, 5]]
    assert ev.accuracy == pytest.approx(0.8)
    assert ev.sensitivity == pytest.approx(5 / 6)
    assert ev.specificity == pytest.approx(3 / 4)
    assert ev.ppv == pytest.approx(5 / 6)
    assert ev.npv == pytest.approx(3 / 4)
    assert ev.auc == pytest.approx(_pairwise_auc(truth, scores))
    assert ev.per_class["NORMAL"].recall == pytest.approx(0.75)
    assert ev.per_class["PNEUMONIA"].f1 == pytest.approx(5 / 6)
    data = ev.to_dict()
    assert data["at_threshold_0.5"]["sensitivity"] == pytest.approx(5 / 6)
    assert "roc" not in data
    assert len(ev.to_dict(with_roc=True)["roc"]["fpr"]) == len(ev.roc["tpr"])
