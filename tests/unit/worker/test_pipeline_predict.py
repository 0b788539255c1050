"""The predict stage: partial batches padded to a few fixed shapes when the model is
XLA-compiled, non-finite answers refused, a 16-bit NaN answered in float32."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from db.models import ModelVersion
from tests.tiny_model import TINY_SIZE, save_tiny_model
from worker.inference import LoadedModel, load_model_version
from worker.pipeline import NonFiniteOutputError, OperatingPoint, Predictor, padded_size


@pytest.mark.parametrize(
    ("count", "expected"), [(1, 1), (2, 2), (3, 4), (5, 8), (16, 16), (17, 32), (64, 64)]
)
def test_batches_are_padded_to_the_next_power_of_two(count: int, expected: int) -> None:
    assert padded_size(count) == expected


@pytest.mark.parametrize(("count", "expected"), [(5, 8), (16, 16), (17, 24), (24, 24), (30, 32)])
def test_padding_stops_at_a_batch_size_that_is_no_power_of_two(count: int, expected: int) -> None:
    """CXR_BATCH_SIZE=24: a full batch runs as it is, never padded to 32."""
    assert padded_size(count, 24) == expected


class _ShapeRecorder:
    """Wraps a Keras model and records the batch shapes it was called with."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.shapes: list[int] = []

    def predict_on_batch(self, images: np.ndarray) -> Any:
        self.shapes.append(len(images))
        return self.model.predict_on_batch(images)


def _loaded(model: Any, *, pad: bool) -> LoadedModel:
    return LoadedModel(
        version_id=1,
        version="tiny",
        input_size=TINY_SIZE,
        predictor=Predictor(model, name="tiny", pad_batches=pad),
        point=OperatingPoint(("NORMAL", "PNEUMONIA"), "PNEUMONIA", 0.5),
    )


def test_padding_changes_the_shapes_run_but_not_the_answers(tmp_path: Path) -> None:
    import keras

    path = tmp_path / "tiny.keras"
    save_tiny_model(path)
    model = keras.models.load_model(path, compile=False)
    images = np.random.default_rng(0).integers(0, 256, (11, TINY_SIZE, TINY_SIZE, 3), np.uint8)

    recorder = _ShapeRecorder(model)
    padded = _loaded(recorder, pad=True)
    plain = _loaded(model, pad=False)
    for count in (1, 3, 5, 11):
        answer = padded.predictor(images[:count])
        assert answer.values.shape == (count, 2)
        assert not answer.fell_back.any()
        reference = plain.predictor(images[:count]).values
        np.testing.assert_allclose(answer.values, reference, atol=1e-5)
    assert recorder.shapes == [1, 4, 8, 16]


def test_an_xla_model_loaded_by_the_worker_pads(tmp_path: Path) -> None:
    """`CXR_XLA=on` (or a GPU under `auto`) compiles the model, so the worker pads; the
    compiled model gives the float32 answers of the plain one."""
    path = tmp_path / "tiny.keras"
    row = ModelVersion(
        id=7,
        version="tiny",
        artifact_path=str(path),
        checksum=save_tiny_model(path),
        backbone="tiny",
        classes=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        input_size=TINY_SIZE,
        threshold=0.5,
    )
    compiled = load_model_version(row, xla="on")
    plain = load_model_version(row, xla="off")
    assert compiled.predictor.pad_batches is True
    assert plain.predictor.pad_batches is False
    images = np.random.default_rng(1).integers(0, 256, (3, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    np.testing.assert_allclose(
        compiled.predictor(images).values, plain.predictor(images).values, atol=1e-5
    )


class _Broken:
    """A model whose second image comes out as NaN (as bfloat16 under a buggy compiler did)."""

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        out = np.full((len(images), 2), 0.5, dtype=np.float32)
        out[1] = np.nan
        return out


def test_non_finite_probabilities_are_refused_not_read_as_negative() -> None:
    model = _loaded(_Broken(), pad=False)
    images = np.zeros((3, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    with pytest.raises(NonFiniteOutputError, match=r"1 of 3 images .*CXR_PRECISION"):
        model.classify(images)


def test_a_16_bit_nan_is_answered_by_the_float32_model(tmp_path: Path) -> None:
    """Mixed precision overflowing on one image: that image is screened in float32."""
    import keras

    path = tmp_path / "tiny.keras"
    save_tiny_model(path)
    float32 = keras.models.load_model(path, compile=False)
    loaded = _loaded(_Broken(), pad=False)
    predictor = dataclasses.replace(
        loaded.predictor, precision="mixed_float16", float32_model=float32
    )
    model = dataclasses.replace(loaded, predictor=predictor)
    images = np.random.default_rng(2).integers(0, 256, (3, TINY_SIZE, TINY_SIZE, 3), np.uint8)
    verdicts = model.classify(images)
    expected = np.asarray(float32.predict_on_batch(images.astype(np.float32)))
    assert verdicts[1].probability == pytest.approx(float(expected[1, 1]), abs=1e-6)
    assert verdicts[0].probability == 0.5  # the 16-bit answers that were finite stay
    # and each is recorded with the precision it was computed in
    assert [v.precision for v in verdicts] == ["mixed_float16", "float32", "mixed_float16"]
