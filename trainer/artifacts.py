"""A model version's folder on disk: the model, its card, its report and their names."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainer.errors import RegistryError
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
        shifted=result.shifted.pooled if result.shifted is not None else None,
        calibration=result.calibration,
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
            # The threshold each folder alone would give; the chosen one is the lowest.
            "threshold_chosen_on": result.thresholds,
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
            "exact_duplicates": result.duplicates,
        },
        "evaluation": result.evaluation.to_dict(),
        # The same films under 8 site changes (trainer.site_shift), at the same threshold.
        "shifted_evaluation": result.shifted.to_dict() if result.shifted is not None else None,
        "calibration": result.calibration,
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
