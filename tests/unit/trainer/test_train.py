"""Training on cached features: frozen base, only new images extracted, consistent model."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.unit.trainer.conftest import write_image
from trainer.backbones import weights_sha256
from trainer.data import LabelledImage, load_dataset, prepare_images
from trainer.errors import ConfigError, DataError
from trainer.features import CacheKey
from trainer.site_shift import SHIFTS, TRAINED_SHIFTS
from trainer.train import TrainConfig, class_weights, site_view, train_model
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput
from worker.settings import Settings


def _pixels(images: Sequence[LabelledImage], size: int) -> np.ndarray:
    prepared = prepare_images(images, ModelInput.of(size, DecodeOptions()))
    assert len(prepared.images) == len(images)
    return prepared.pixels


def test_trains_a_useful_head_and_leaves_the_base_frozen(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    (tiny_data / "train/NORMAL/broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dataset = load_dataset(tiny_data)
    result = train_model(dataset, tiny_config, cache_root=tmp_path / "cache", decode=decode)
    base = result.model.get_layer("base")
    # The base after training hashes the same as the base it started from.
    assert weights_sha256(base) == result.base_weights_sha256
    assert result.model.trainable_weights == result.model.get_layer("head").trainable_weights
    assert result.evaluation.auc is not None
    assert result.evaluation.auc >= 0.9
    assert result.evaluation.sensitivity is not None
    assert result.evaluation.sensitivity >= tiny_config.min_sensitivity
    assert result.positive_class == "PNEUMONIA"
    assert 0.0 <= result.threshold <= 1.0
    assert len(result.history["loss"]) == tiny_config.epochs
    # A file that does not decode is skipped and reported, not fatal.
    assert [Path(p).name for p, _ in result.skipped_files] == ["broken.jpeg"]
    assert result.counts["train"] == {"NORMAL": 10, "PNEUMONIA": 10}
    # The evaluation folder's shifted copy: 12 films under 8 site changes.
    assert result.extraction == {
        "extracted": 32,
        "cached": 0,
        "shifted_extracted": 96,
        "shifted_cached": 0,
    }
    # The servable model on raw pixels gives the probabilities the metrics used.
    pixels = _pixels(dataset.evaluation.images, 32)
    np.testing.assert_allclose(
        result.model.predict(pixels, verbose=0), result.probabilities, atol=1e-4
    )


def test_a_rerun_extracts_only_new_images(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    train_model(load_dataset(tiny_data), tiny_config, cache_root=cache, decode=decode)
    write_image(tiny_data / "train/NORMAL/new_1.png", "NORMAL", 301)
    write_image(tiny_data / "train/PNEUMONIA/new_2.png", "PNEUMONIA", 302)
    more = train_model(load_dataset(tiny_data), tiny_config, cache_root=cache, decode=decode)
    assert more.extraction == {
        "extracted": 2,
        "cached": 32,
        "shifted_extracted": 0,
        "shifted_cached": 96,
    }


def test_the_cache_key_separates_backbones_weights_sizes_and_decoders() -> None:
    key = CacheKey("vgg16", "a" * 64, 224, "base_output", 1, "worker.imaging;draft=448")
    variants = [
        dataclasses.replace(key, backbone="vgg19"),
        dataclasses.replace(key, base_weights_sha256="b" * 64),
        dataclasses.replace(key, input_size=256),
        dataclasses.replace(key, layer="block4_pool:output"),
        dataclasses.replace(key, preprocessing_version=2),
        dataclasses.replace(key, decoder="worker.imaging;draft=None"),
        dataclasses.replace(key, view="augmented-1"),
    ]
    digests = {key.digest(), *(variant.digest() for variant in variants)}
    assert len(digests) == 1 + len(variants)
    assert key.digest() == dataclasses.replace(key).digest()


def test_stored_augmented_views_train_on_more_features(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    config = dataclasses.replace(tiny_config, augment_views=1)
    result = train_model(load_dataset(tiny_data), config, cache_root=tmp_path / "c", decode=decode)
    assert (result.extraction["extracted"], result.extraction["cached"]) == (32 + 20, 0)
    assert weights_sha256(result.model.get_layer("base")) == result.base_weights_sha256


def test_fine_tuning_changes_only_the_last_block(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        tiny_config, fine_tune=True, fine_tune_epochs=2, fine_tune_learning_rate=1e-3
    )
    result = train_model(load_dataset(tiny_data), config, cache_root=tmp_path / "c", decode=decode)
    base = result.model.get_layer("base")
    assert weights_sha256(base) != result.base_weights_sha256
    keras.utils.set_random_seed(config.seed)  # the base train_model built from this seed
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    for layer in base.layers:
        if not layer.weights:
            continue
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                layer.get_weights(), reference.get_layer(layer.name).get_weights(), strict=True
            )
        )
        assert same == (not layer.name.startswith("block5_")), layer.name
    assert not base.trainable


def test_online_augmentation_trains_end_to_end_with_a_frozen_base(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    config = dataclasses.replace(tiny_config, online_augmentation=True, epochs=2)
    result = train_model(load_dataset(tiny_data), config, cache_root=tmp_path / "c", decode=decode)
    assert weights_sha256(result.model.get_layer("base")) == result.base_weights_sha256
    assert len(result.history["val_loss"]) == 2
    assert not (tmp_path / "c").exists()


def test_the_default_recipe_fine_tunes_unless_the_site_turns_it_off() -> None:
    assert TrainConfig().fine_tune
    assert TrainConfig.from_settings(Settings()).fine_tune
    assert not TrainConfig.from_settings(Settings(fine_tune=False)).fine_tune
    assert not TrainConfig.from_settings(Settings(), fine_tune=False).fine_tune
    assert TrainConfig().to_dict()["fine_tune_epochs"] == 3


def test_class_weights_balance_the_classes() -> None:
    weights = class_weights(np.array([0] * 10 + [1] * 30), 2)
    assert weights == pytest.approx({0: 2.0, 1: 2 / 3})


def test_bad_configuration_and_unusable_data_fail_fast(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not both"):
        dataclasses.replace(tiny_config, online_augmentation=True, augment_views=1).validate()
    with pytest.raises(ConfigError, match="positive class 'COVID'"):
        train_model(
            load_dataset(tiny_data),
            dataclasses.replace(tiny_config, positive_class="COVID"),
            cache_root=tmp_path,
            decode=decode,
        )
    for path in (tiny_data / "val/NORMAL").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="needs decodable images of PNEUMONIA and of the other"):
        train_model(load_dataset(tiny_data), tiny_config, cache_root=tmp_path, decode=decode)


def test_the_threshold_holds_on_the_shifted_copy_and_the_head_is_calibrated(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    dataset = load_dataset(tiny_data)
    result = train_model(dataset, tiny_config, cache_root=tmp_path / "c", decode=decode)
    assert result.shifted is not None
    assert result.shifted_probabilities is not None
    assert set(result.shifted.per_shift) == set(SHIFTS)
    assert result.shifted.pooled.n == 8 * result.evaluation.n
    # Sensitivity reaches the target on both folders at the one threshold chosen.
    assert result.thresholds["chosen"] == result.threshold
    assert result.threshold == min(result.thresholds["evaluation"], result.thresholds["shifted"])
    assert result.evaluation.sensitivity is not None
    assert result.shifted.pooled.sensitivity is not None
    assert result.evaluation.sensitivity >= tiny_config.min_sensitivity
    assert result.shifted.pooled.sensitivity >= tiny_config.min_sensitivity
    # The temperature is in the saved model: its answers are the calibrated ones.
    calibration = result.calibration
    assert calibration["temperature"] != 1.0
    after = calibration["after"]["evaluation"]["ece"]
    assert after <= calibration["before"]["evaluation"]["ece"] + 1e-6
    pixels = _pixels(dataset.evaluation.images, 32)
    np.testing.assert_allclose(
        result.model.predict(pixels, verbose=0), result.probabilities, atol=1e-4
    )
    plain = dataclasses.replace(tiny_config, calibrate=False, shifted_evaluation=False)
    uncalibrated = train_model(dataset, plain, cache_root=tmp_path / "c", decode=decode)
    assert uncalibrated.shifted is None
    assert uncalibrated.calibration["temperature"] == 1.0
    assert uncalibrated.threshold == uncalibrated.thresholds["evaluation"]
    # Same seed, same features: tempering changed what the probabilities claim, not the
    # ranking.
    assert uncalibrated.evaluation.auc == pytest.approx(result.evaluation.auc)


def test_stored_site_change_views_are_their_own_cache_view(
    tiny_data: Path, tiny_config: TrainConfig, decode: DecodeOptions, tmp_path: Path
) -> None:
    config = dataclasses.replace(tiny_config, site_views=1, shifted_evaluation=False)
    result = train_model(load_dataset(tiny_data), config, cache_root=tmp_path / "c", decode=decode)
    assert (result.extraction["extracted"], result.extraction["cached"]) == (32 + 20, 0)
    views = {json.loads(key.read_text())["view"] for key in (tmp_path / "c").glob("*/key.json")}
    assert views == {"original", site_view(1)}
    assert result.config.to_dict()["site_changes_trained"] == list(TRAINED_SHIFTS)
