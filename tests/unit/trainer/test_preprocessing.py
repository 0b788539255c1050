"""The in-model preprocessing equals each backbone's own `preprocess_input`."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.backbones import get_backbone
from trainer.model import build_classifier
from trainer.preprocessing import preprocessing_layer
from worker.pipeline.backbones import BACKBONES


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=(2, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_layer_matches_the_backbones_preprocess_input(name: str) -> None:
    spec = get_backbone(name)
    x = _pixels()
    expected = spec.preprocess_input()(x.copy())
    got = keras.ops.convert_to_numpy(preprocessing_layer(spec.preprocessing)(x))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_caffe_and_tf_modes_differ_so_the_check_above_can_fail() -> None:
    x = _pixels()
    caffe = keras.ops.convert_to_numpy(preprocessing_layer("caffe")(x))
    tf_mode = keras.ops.convert_to_numpy(preprocessing_layer("tf")(x))
    assert not np.allclose(caffe, tf_mode, atol=1.0)
    # The seed tutorial's x / 255 is wrong for VGG16's ImageNet weights.
    assert not np.allclose(caffe, x / 255.0, atol=1.0)


def test_caffe_mode_swaps_to_bgr_and_subtracts_the_imagenet_mean() -> None:
    x = np.zeros((1, 1, 1, 3), dtype=np.float32)
    x[..., 0] = 200.0  # red
    got = keras.ops.convert_to_numpy(preprocessing_layer("caffe")(x))[0, 0, 0]
    np.testing.assert_allclose(got, [-103.939, -116.779, 200.0 - 123.68], atol=1e-4)


def test_the_model_applies_vgg16_preprocessing_before_the_base() -> None:
    classifier = build_classifier(get_backbone("vgg16"), size=32, n_classes=2, weights=None, seed=1)
    x = np.random.default_rng(1).uniform(0, 255, size=(3, 32, 32, 3)).astype(np.float32)
    reference = keras.applications.vgg16.preprocess_input(x.copy())
    features = classifier.base.predict_on_batch(reference)
    expected = classifier.head.predict_on_batch(features)
    np.testing.assert_allclose(classifier.model.predict_on_batch(x), expected, atol=1e-5)
    assert [layer.name for layer in classifier.model.layers[:3]] == ["image", "preprocess", "base"]
