"""A fine-tuned model is scored from the block-4 features its training cached: only its
last block and head run, and it answers exactly as the whole model does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from db.models import ModelStatus
from tests.unit.trainer.conftest import make_dataset, tiny_train_config
from trainer.backbones import weights_sha256
from trainer.data import load_dataset, prepare_images
from trainer.features import feature_cache
from trainer.model import cut_cache_layer
from trainer.registered import ModelRef, evaluate_ref
from trainer.train import TrainResult, train_model, training_input
from worker.imaging import DecodeOptions
from worker.pipeline import file_sha256
from worker.pipeline.backbones import BACKBONES


def _ref(
    model: keras.Model, result: TrainResult, artifact: Path, *, trained_from: str | None
) -> ModelRef:
    model.save(artifact)
    return ModelRef(
        version=artifact.stem,
        artifact_path=artifact,
        checksum=file_sha256(artifact),
        backbone="vgg16",
        classes=result.classes,
        positive_class=result.positive_class,
        threshold=result.threshold,
        status=ModelStatus.ACTIVE,
        input_size=32,
        base_weights_sha256=trained_from,
    )


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path, Path]:
    """A tiny fine-tuned run: (its result, its data folder, its feature cache)."""
    root = tmp_path_factory.mktemp("tuned")
    data = make_dataset(root / "data", train=8, val=5)
    config = dataclasses.replace(
        tiny_train_config(epochs=2), fine_tune=True, fine_tune_epochs=1,
        fine_tune_learning_rate=1e-3, shifted_evaluation=False,
    )  # fmt: skip
    result = train_model(
        load_dataset(data), config, cache_root=root / "cache", decode=DecodeOptions()
    )
    return result, data, root / "cache"


def _whole_model(model: keras.Model, result: TrainResult, data: Path) -> np.ndarray:
    split = load_dataset(data).evaluation
    prepared = prepare_images(split.images, training_input(result.config, DecodeOptions()))
    return np.asarray(model.predict(prepared.pixels.astype(np.float32), verbose=0))


def test_scores_from_the_cut_features_training_cached(
    tuned: tuple[TrainResult, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result, data, cache_root = tuned
    ref = _ref(
        result.model, result, tmp_path / "tuned.keras", trained_from=result.base_weights_sha256
    )
    split = load_dataset(data).evaluation
    cut_cache = feature_cache(
        cache_root, backbone="vgg16", base_sha=result.base_weights_sha256,
        model_input=training_input(result.config, DecodeOptions()),
        layer=cut_cache_layer(BACKBONES["vgg16"]),
    )  # fmt: skip
    assert all(cut_cache.has(image.sha256) for image in split.images)

    evaluation, scored = evaluate_ref(ref, split, cache_root=cache_root, decode=DecodeOptions())

    np.testing.assert_allclose(
        scored.probabilities, _whole_model(result.model, result, data), atol=1e-5
    )
    assert evaluation.n == len(split.images)
    # Nothing went through the whole model: no base-output features of the tuned base.
    tuned_sha = weights_sha256(result.model.get_layer("base"))
    keys = [key.read_text() for key in cache_root.glob("*/key.json")]
    assert keys
    assert not [key for key in keys if tuned_sha in key and '"layer": "base_output"' in key]
    assert "do not compute the features cached" not in caplog.text


def test_lower_blocks_that_differ_from_the_cached_ones_score_through_the_whole_model(
    tuned: tuple[TrainResult, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result, data, cache_root = tuned
    result.model.save(tmp_path / "tuned.keras")
    changed = keras.models.load_model(tmp_path / "tuned.keras", compile=False)
    conv = changed.get_layer("base").get_layer("block1_conv1")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * 1.5, bias])
    ref = _ref(changed, result, tmp_path / "changed.keras", trained_from=result.base_weights_sha256)
    expected = _whole_model(changed, result, data)
    split = load_dataset(data).evaluation

    _, scored = evaluate_ref(ref, split, cache_root=cache_root, decode=DecodeOptions())

    np.testing.assert_allclose(scored.probabilities, expected, atol=1e-5)
    assert "do not compute the features cached" in caplog.text
