"""The promotion gate: a candidate worse than the active model is never promoted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data import LabelledSplit
from trainer.gate import GateFolder, GateRule, ShiftedCandidate, apply_gate, gate_against_active
from trainer.metrics import Evaluation, evaluate_probabilities
from worker.imaging import DecodeOptions

CLASSES = ("NORMAL", "PNEUMONIA")


def _scores(separation: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.r_[np.zeros(200), np.ones(200)].astype(bool)
    scores = 1 / (1 + np.exp(-(rng.normal(size=400) + separation * (truth * 2 - 1))))
    return truth, scores


def _evaluate(truth: np.ndarray, scores: np.ndarray, threshold: float) -> Evaluation:
    return evaluate_probabilities(
        np.c_[1 - scores, scores], truth.astype(int), classes=CLASSES,
        positive_class="PNEUMONIA", threshold=threshold,
    )  # fmt: skip


def test_first_model_needs_only_the_minimum_auc() -> None:
    good = _evaluate(*_scores(2.0), 0.5)
    assert apply_gate(good, None).passed
    useless = _evaluate(*_scores(0.0), 0.5)
    decision = apply_gate(useless, None)
    assert not decision.passed
    assert "below the minimum" in decision.summary()


def test_a_worse_candidate_is_rejected_and_an_equal_or_better_one_passes() -> None:
    active = _evaluate(*_scores(1.5), 0.5)
    worse_truth, worse_scores = _scores(0.8, seed=1)
    worse = _evaluate(worse_truth, worse_scores, 0.5)
    decision = apply_gate(worse, active, candidate_scores=(worse_truth, worse_scores))
    assert not decision.passed
    assert "AUC" in decision.summary()
    same_truth, same_scores = _scores(1.5)
    same = _evaluate(same_truth, same_scores, 0.5)
    assert apply_gate(same, active, candidate_scores=(same_truth, same_scores)).passed
    better_truth, better_scores = _scores(2.5, seed=2)
    better = _evaluate(better_truth, better_scores, 0.3)
    assert apply_gate(better, active, candidate_scores=(better_truth, better_scores)).passed


def test_sensitivity_is_compared_at_the_active_models_specificity() -> None:
    truth, scores = _scores(1.5)
    active = _evaluate(truth, scores, 0.3)  # a sensitive operating point
    # Same ranking (same AUC), but the candidate's curve is worse where the active model
    # operates: it loses the positives that the active model caught at high sensitivity.
    degraded = scores.copy()
    low_positives = truth & (scores < np.quantile(scores[truth], 0.15))
    degraded[low_positives] = 0.0
    candidate = _evaluate(truth, degraded, 0.5)
    decision = apply_gate(
        candidate, active, candidate_scores=(truth, degraded), rule=GateRule(auc_tolerance=0.05)
    )
    assert not decision.passed
    assert "at the active model's specificity" in decision.summary()
    # A mere change of operating point with the same scores is not a regression.
    moved = _evaluate(truth, scores, 0.6)
    assert apply_gate(moved, active, candidate_scores=(truth, scores)).passed


def test_different_classes_are_not_comparable() -> None:
    truth, scores = _scores(2.0)
    candidate = _evaluate(truth, scores, 0.5)
    other = evaluate_probabilities(
        np.c_[1 - scores, scores], truth.astype(int), classes=("HEALTHY", "PNEUMONIA"),
        positive_class="PNEUMONIA", threshold=0.5,
    )  # fmt: skip
    decision = apply_gate(candidate, other, candidate_scores=(truth, scores))
    assert not decision.passed
    assert "classes differ" in decision.summary()


def test_a_candidate_must_also_pass_on_the_shifted_copy(tmp_path: Path) -> None:
    # Useful on val, useless on the shifted copy: not put in service.
    good, useless = _scores(2.0), _scores(0.0, seed=1)
    folder = GateFolder(
        LabelledSplit("val", tmp_path, CLASSES, ()), tmp_path / "cache", DecodeOptions()
    )
    on_val = _evaluate(*good, 0.5)
    decision = gate_against_active(
        on_val, good, None, folder,
        shifted=ShiftedCandidate(_evaluate(*useless, 0.5), useless),
    )  # fmt: skip
    assert not decision.passed
    assert decision.shifted is not None
    assert not decision.shifted.passed
    assert any(r.startswith("shifted copy: AUC") for r in decision.reasons)
    assert decision.to_dict()["shifted"]["candidate"]["auc"] < 0.8
    both = gate_against_active(
        on_val, good, None, folder, shifted=ShiftedCandidate(_evaluate(*good, 0.5), good)
    )
    assert both.passed
