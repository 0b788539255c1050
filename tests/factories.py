"""Build realistic rows for tests: scans, model versions and predictions."""

from __future__ import annotations

import hashlib
import itertools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from db.models import ModelStatus, ModelVersion, Prediction, Scan, ScanStatus
from db.types import utcnow

_counter = itertools.count(1)


def add_scan(session: Session, **overrides: Any) -> Scan:
    """A queued JPEG scan with a unique content hash, unless overridden."""
    n = next(_counter)
    values: dict[str, Any] = {
        "sha256": hashlib.sha256(f"scan-{n}".encode()).hexdigest(),
        "source_path": f"inbox/scan-{n}.jpeg",
        "format": "jpeg",
        "size_bytes": 1000 + n,
        "status": ScanStatus.QUEUED,
        "received_at": utcnow(),
    }
    values.update(overrides)
    scan = Scan(**values)
    session.add(scan)
    session.flush()
    return scan


def add_model_version(session: Session, **overrides: Any) -> ModelVersion:
    """An active VGG16 model version, unless overridden."""
    n = next(_counter)
    values: dict[str, Any] = {
        "version": f"v{n}",
        "artifact_path": f"models/v{n}/model.keras",
        "checksum": hashlib.sha256(f"model-{n}".encode()).hexdigest(),
        "backbone": "vgg16",
        "classes": ["NORMAL", "PNEUMONIA"],
        "positive_class": "PNEUMONIA",
        "input_size": 224,
        "threshold": 0.5,
        "metrics": {"auc": 0.97},
        "status": ModelStatus.ACTIVE,
    }
    values.update(overrides)
    model = ModelVersion(**values)
    session.add(model)
    session.flush()
    return model


def add_prediction(
    session: Session,
    *,
    scan: Scan,
    model: ModelVersion,
    probability: float,
    created_at: datetime | None = None,
    inference_precision: str = "float32",
) -> Prediction:
    """A prediction of `model` on `scan`, labelled at the model's threshold."""
    label = model.positive_class if probability >= model.threshold else "NORMAL"
    prediction = Prediction(
        scan_id=scan.id,
        model_version_id=model.id,
        label=label,
        probability=probability,
        probabilities={"NORMAL": 1 - probability, "PNEUMONIA": probability},
        threshold=model.threshold,
        created_at=created_at or utcnow(),
        worker="test@host",
        inference_precision=inference_precision,
    )
    session.add(prediction)
    session.flush()
    return prediction


def hours_ago(hours: float) -> datetime:
    """An aware UTC time `hours` before now."""
    return utcnow() - timedelta(hours=hours)
