"""`evaluate_ref` in a 16-bit precision answers non-finite images in float32, as a worker does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from db.models import ModelStatus
from tests.tiny_model import save_tiny_model
from tests.unit.trainer.conftest import make_dataset
from trainer.data import scan_split
from trainer.registered import ModelRef, evaluate_ref
from worker.imaging import DecodeOptions
from worker.pipeline import predict as predict_stage

CLASSES = ("NORMAL", "PNEUMONIA")


class _SecondRowNaN:
    """The real model, but the second image of every batch comes out NaN (as a 16-bit
    overflow would)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.input_shape = model.input_shape
        self.output_shape = model.output_shape
        self.jit_compile = False

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        out = np.array(self._model.predict_on_batch(images), dtype=np.float32)
        if len(out) > 1:
            out[1] = np.nan
        return out


def test_non_finite_16_bit_answers_are_scored_in_float32_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = tmp_path / "tiny.keras"
    ref = ModelRef(
        version="tiny",
        artifact_path=artifact,
        checksum=save_tiny_model(artifact),
        backbone="tiny",
        classes=CLASSES,
        positive_class="PNEUMONIA",
        threshold=0.5,
        status=ModelStatus.ACTIVE,
    )
    split = scan_split(make_dataset(tmp_path / "data", train=1, val=5) / "val", classes=CLASSES)
    common: dict[str, Any] = {"cache_root": tmp_path / "cache", "decode": DecodeOptions()}
    _, reference = evaluate_ref(ref, split, batch_size=4, **common)
    assert reference.fell_back == 0

    real = predict_stage.for_inference
    monkeypatch.setattr(
        predict_stage,
        "for_inference",
        lambda model, **kw: _SecondRowNaN(real(model, **kw)),
    )
    evaluation, scored = evaluate_ref(
        ref, split, batch_size=4, precision="mixed_bfloat16", **common
    )

    # 10 images in batches of 4, 4 and 2: the second of each is NaN in "16 bits".
    assert scored.fell_back == 3
    assert np.isfinite(scored.probabilities).all()
    rows = [1, 5, 9]
    np.testing.assert_allclose(scored.probabilities[rows], reference.probabilities[rows], atol=1e-6)
    assert evaluation.n == 10
