"""A small real Keras model saved as an artifact and registered, for worker tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import ModelStatus, ModelVersion
from db.session import session_scope

TINY_SIZE = 32


def save_tiny_model(path: Path, *, size: int = TINY_SIZE, seed: int = 0) -> str:
    """Save a tiny conv net (RGB 0-255 in, softmax over 2 classes out); return its sha256.

    Its weights are random but fixed by `seed`, so two seeds give two distinguishable
    models, and it runs in milliseconds on a CPU.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def register_model(
    factory: sessionmaker[Session],
    *,
    model_dir: Path,
    version: str,
    status: ModelStatus = ModelStatus.ACTIVE,
    seed: int = 0,
    threshold: float = 0.5,
) -> int:
    """Save a tiny model under `model_dir/version/` and add its registry row."""
    artifact = model_dir / version / "model.keras"
    checksum = save_tiny_model(artifact, seed=seed)
    with session_scope(factory) as session:
        if status is ModelStatus.ACTIVE:
            for row in session.query(ModelVersion).filter_by(status=ModelStatus.ACTIVE):
                row.status = ModelStatus.RETIRED
        row = ModelVersion(
            version=version,
            artifact_path=str(artifact),
            checksum=checksum,
            backbone="tiny",
            classes=["NORMAL", "PNEUMONIA"],
            positive_class="PNEUMONIA",
            input_size=TINY_SIZE,
            threshold=threshold,
            metrics={},
            status=status,
        )
        session.add(row)
        session.flush()
        return row.id
