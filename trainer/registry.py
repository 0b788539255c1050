"""Model artifacts on disk (model, card, report, checksums) and the promotion gate."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainer.errors import RegistryError
from trainer.metrics import Evaluation, sensitivity_at_specificity
from trainer.report import INTENDED_USE, LIMITATIONS, write_report
from trainer.train import TrainResult
from worker.pipeline import file_sha256

ARTIFACT_NAME = "model.keras"
CARD_NAME = "model_card.json"
REPORT_NAME = "report.png"
CARD_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class SavedModel:
    """Where a trained model was written, and the artifact's checksum."""

    version: str
    directory: Path
    artifact: Path
    checksum: str
    card: dict[str, Any]


def new_version(backbone: str, *, now: datetime, taken: set[str] | None = None) -> str:
    """``20261129-020000-vgg16``: sortable, readable, unique among `taken`."""
    stem = f"{now:%Y%m%d-%H%M%S}-{backbone}"
    version, n = stem, 1
    while taken and version in taken:
        n += 1
        version = f"{stem}-{n}"
    return version


def save_trained(
    result: TrainResult,
    *,
    model_dir: Path,
    version: str,
    data_fingerprint: str,
    data_root: Path,
    created_at: datetime,
) -> SavedModel:
    """Write ``model_dir/<version>/`` with the model, its card (JSON) and the PNG report."""
    directory = model_dir / version
    if directory.exists():
        raise RegistryError(f"{directory} already exists; model versions are never overwritten")
    directory.mkdir(parents=True)
    artifact = directory / ARTIFACT_NAME
    result.model.save(artifact)
    checksum = file_sha256(artifact)
    write_report(
        directory / REPORT_NAME,
        evaluation=result.evaluation,
        history=result.history,
        title=f"{version}: {result.config.backbone} evaluated on held-out images of {data_root}",
    )
    card = model_card(
        result,
        version=version,
        checksum=checksum,
        data_fingerprint=data_fingerprint,
        data_root=data_root,
        created_at=created_at,
    )
    (directory / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return SavedModel(version, directory, artifact, checksum, card)


def model_card(
    result: TrainResult,
    *,
    version: str,
    checksum: str,
    data_fingerprint: str,
    data_root: Path,
    created_at: datetime,
) -> dict[str, Any]:
    """What a reader (or an auditor) needs to know about one model version."""
    config = result.config
    return {
        "schema": CARD_SCHEMA,
        "version": version,
        "created_at": created_at.isoformat(),
        "artifact": {"file": ARTIFACT_NAME, "sha256": checksum, "format": "keras v3"},
        "model": {
            "backbone": config.backbone,
            "input": {
                "shape": [config.size(), config.size(), 3],
                "pixels": "RGB 0..255 (grey replicated), stretched to the input size by "
                "worker.imaging.to_model_input; the backbone's preprocessing is inside "
                "the model",
            },
            "output": "softmax over classes",
            "classes": list(result.classes),
            "positive_class": result.positive_class,
            "threshold": result.threshold,
            "threshold_rule": result.threshold_rule,
            "base_frozen": not config.fine_tune,
        },
        "base_weights": {
            "source": str(config.base_weights),
            # Of the weight tensors as loaded, so `imagenet`, a file and a copy agree.
            "tensors_sha256": result.base_weights_sha256,
            "file_sha256": _weights_file_sha256(config.base_weights),
        },
        "training": config.to_dict(),
        "data": {
            "root": str(data_root),
            "fingerprint": data_fingerprint,
            "counts": result.counts,
            "skipped_files": [{"path": p, "reason": r} for p, r in result.skipped_files],
        },
        "evaluation": result.evaluation.to_dict(),
        "history": result.history,
        "timings_s": result.timings,
        "features": result.extraction,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "software": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }


def _weights_file_sha256(source: str | Path | None) -> str | None:
    if source is None or str(source).lower() in ("imagenet", "none"):
        return None
    path = Path(source)
    return file_sha256(path) if path.is_file() else None


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "candidate": self.candidate,
            "active": self.active,
            "rule": self.rule,
        }

    def summary(self) -> str:
        """One line for logs and notes."""
        verdict = "passed" if self.passed else "failed"
        return f"gate {verdict}: " + "; ".join(self.reasons)


def apply_gate(
    candidate: Evaluation,
    active: Evaluation | None,
    *,
    candidate_scores: tuple[np.ndarray, np.ndarray] | None = None,
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
