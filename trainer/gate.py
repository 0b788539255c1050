"""The promotion gate: whether a candidate may replace the active model, and why."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trainer.data import LabelledSplit
from trainer.evaluate import Scored
from trainer.metrics import Evaluation, sensitivity_at_specificity
from trainer.registered import ModelRef, evaluate_ref, evaluate_shifted
from worker.imaging import DecodeOptions

logger = logging.getLogger(__name__)

# (is_positive, positive-class probability) of one model on one folder.
Scores = tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class GateRule:
    """When a candidate counts as "not worse" than the active model.

    Both are measured on the same evaluation folder, the active model at its own
    recorded threshold. The candidate passes when:

    1. its AUC is at least `min_auc` (any model put in service must be useful), and,
       when there is an active model with the same classes,
    2. its AUC is at least the active model's minus `auc_tolerance`, and
    3. at the active model's operating point (its specificity on this folder), the
       candidate's ROC curve reaches at least the active model's sensitivity minus
       `sensitivity_tolerance`: it would miss no more cases at the same false-alarm rate.

    Comparing sensitivity at matched specificity, not at each model's own threshold,
    keeps a mere shift of operating point from passing or failing the gate.
    """

    min_auc: float = 0.8
    auc_tolerance: float = 0.005
    sensitivity_tolerance: float = 0.01


@dataclass(slots=True)
class GateDecision:
    """The gate's verdict with the figures it used."""

    passed: bool
    reasons: list[str]
    candidate: dict[str, float | None]
    active: dict[str, float | None] | None
    rule: dict[str, float] = field(default_factory=dict)
    # The same comparison on the folder's shifted copy, when it was made.
    shifted: GateDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "candidate": self.candidate,
            "active": self.active,
            "rule": self.rule,
            "shifted": self.shifted.to_dict() if self.shifted is not None else None,
        }

    def summary(self) -> str:
        """One line for logs and notes."""
        verdict = "passed" if self.passed else "failed"
        return f"gate {verdict}: " + "; ".join(self.reasons)


def apply_gate(
    candidate: Evaluation,
    active: Evaluation | None,
    *,
    candidate_scores: Scores | None = None,
    rule: GateRule | None = None,
) -> GateDecision:
    """Decide whether the candidate may replace the active model.

    Args:
        candidate: The candidate's evaluation on the folder.
        active: The active model's evaluation on the same folder, or None.
        candidate_scores: (is_positive, positive-class probability) of the candidate on
            that folder, for its sensitivity at the active model's specificity.
        rule: The tolerances (default `GateRule()`).
    """
    rule = rule or GateRule()
    reasons: list[str] = []
    figures: dict[str, float | None] = {
        "auc": candidate.auc,
        "sensitivity": candidate.sensitivity,
        "specificity": candidate.specificity,
    }
    passed = True
    if candidate.auc is None:
        return GateDecision(False, ["candidate AUC is undefined"], figures, None, asdict(rule))
    if candidate.auc < rule.min_auc:
        passed = False
        reasons.append(f"AUC {candidate.auc:.4f} is below the minimum {rule.min_auc:.2f}")
    if active is None:
        reasons.append("no active model to compare with")
        return GateDecision(passed, reasons, figures, None, asdict(rule))
    active_figures: dict[str, float | None] = {
        "auc": active.auc,
        "sensitivity": active.sensitivity,
        "specificity": active.specificity,
        "threshold": active.threshold,
    }
    if active.classes != candidate.classes or active.positive_class != candidate.positive_class:
        reasons.append(
            f"classes differ (active {list(active.classes)}/{active.positive_class}, candidate "
            f"{list(candidate.classes)}/{candidate.positive_class}); promote by hand with --force"
        )
        return GateDecision(False, reasons, figures, active_figures, asdict(rule))
    if active.auc is not None:
        if candidate.auc < active.auc - rule.auc_tolerance:
            passed = False
            reasons.append(
                f"AUC {candidate.auc:.4f} < active {active.auc:.4f} - {rule.auc_tolerance}"
            )
        else:
            reasons.append(f"AUC {candidate.auc:.4f} vs active {active.auc:.4f}")
    if active.sensitivity is not None and active.specificity is not None:
        if candidate_scores is not None:
            matched = sensitivity_at_specificity(
                candidate_scores[0], candidate_scores[1], specificity=active.specificity
            )
        else:
            matched = candidate.sensitivity or 0.0
        figures["sensitivity_at_active_specificity"] = matched
        if matched < active.sensitivity - rule.sensitivity_tolerance:
            passed = False
            reasons.append(
                f"sensitivity {matched:.4f} at the active model's specificity "
                f"{active.specificity:.4f} < active {active.sensitivity:.4f} - "
                f"{rule.sensitivity_tolerance}"
            )
        else:
            reasons.append(
                f"sensitivity {matched:.4f} vs active {active.sensitivity:.4f} at specificity "
                f"{active.specificity:.4f}"
            )
    return GateDecision(passed, reasons, figures, active_figures, asdict(rule))


def positive_scores(
    true_idx: npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.float32],
    *,
    classes: tuple[str, ...],
    positive_class: str,
) -> Scores:
    """(is_positive, positive-class probability) for the gate's matched comparison."""
    positive = classes.index(positive_class)
    return true_idx == positive, probabilities[:, positive]


def scores_of(evaluation: Evaluation, scored: Scored) -> Scores:
    """`positive_scores` of a scored folder, at the classes of its evaluation."""
    return positive_scores(
        scored.split.label_indices(evaluation.classes),
        scored.probabilities,
        classes=evaluation.classes,
        positive_class=evaluation.positive_class,
    )


@dataclass(frozen=True, slots=True)
class ShiftedCandidate:
    """The candidate on the folder's shifted copy (`trainer.site_shift`)."""

    evaluation: Evaluation
    scores: Scores


@dataclass(frozen=True, slots=True)
class GateFolder:
    """The labelled folder both models are measured on, and how its files are read."""

    split: LabelledSplit
    cache_root: Path
    decode: DecodeOptions


def gate_against_active(
    candidate: Evaluation,
    candidate_scores: Scores,
    active: ModelRef | None,
    folder: GateFolder,
    *,
    rule: GateRule | None = None,
    shifted: ShiftedCandidate | None = None,
) -> GateDecision:
    """Re-evaluate the active model on the folder and apply the gate; with `shifted`,
    also on the folder's shifted copy, and pass only when both pass.

    Val is a carve of the training acquisitions, so a candidate can beat the active
    model there and still lose at another site; the shifted copy is the stand-in.
    """
    active_eval: Evaluation | None = None
    if active is not None:
        if active.classes != candidate.classes:
            # The active model cannot even be scored on this folder's labels.
            decision = apply_gate(candidate, None, candidate_scores=candidate_scores, rule=rule)
            decision.passed = False
            decision.reasons.append(
                f"active model {active.version} has classes {list(active.classes)}, the "
                f"candidate {list(candidate.classes)}; promote by hand with --force"
            )
            return decision
        active_eval, _ = _evaluate_on(active, folder)
        logger.info(
            "active %s on the same folder: AUC %.4f, sensitivity %.4f, specificity %.4f",
            active.version,
            active_eval.auc or float("nan"),
            active_eval.sensitivity or float("nan"),
            active_eval.specificity or float("nan"),
        )
    decision = apply_gate(candidate, active_eval, candidate_scores=candidate_scores, rule=rule)
    if shifted is None:
        return decision
    active_shifted = (
        evaluate_shifted(
            active, folder.split, cache_root=folder.cache_root, decode=folder.decode
        ).pooled
        if active is not None
        else None
    )
    on_copy = apply_gate(
        shifted.evaluation, active_shifted, candidate_scores=shifted.scores, rule=rule
    )
    decision.shifted = on_copy
    decision.passed = decision.passed and on_copy.passed
    decision.reasons.extend(f"shifted copy: {reason}" for reason in on_copy.reasons)
    return decision


def gate_registered(
    candidate: ModelRef,
    active: ModelRef | None,
    folder: GateFolder,
    *,
    rule: GateRule | None = None,
) -> GateDecision:
    """Measure a registered candidate on the folder and its shifted copy, and gate it
    against the active model on both."""
    evaluation, scored = _evaluate_on(candidate, folder)
    copy = evaluate_shifted(
        candidate, folder.split, cache_root=folder.cache_root, decode=folder.decode
    )
    assert copy.scores is not None  # shifted_figures always sets them
    shifted = ShiftedCandidate(copy.pooled, copy.scores)
    return gate_against_active(
        evaluation, scores_of(evaluation, scored), active, folder, rule=rule, shifted=shifted
    )


def _evaluate_on(ref: ModelRef, folder: GateFolder) -> tuple[Evaluation, Scored]:
    return evaluate_ref(ref, folder.split, cache_root=folder.cache_root, decode=folder.decode)
