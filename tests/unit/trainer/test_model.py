"""The transfer model: frozen base, the seed's head, backbones, weights sources, saving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from trainer.backbones import (
    BACKBONES,
    build_base,
    get_backbone,
    parse_base_weights,
    weights_sha256,
)
from trainer.errors import ConfigError, WeightsError
from trainer.model import HeadConfig, build_classifier, build_front


def test_default_is_the_seed_recipe_with_every_base_layer_frozen() -> None:
    classifier = build_classifier(get_backbone("vgg16"), size=32, n_classes=2, weights=None)
    base = classifier.base
    assert len([layer for layer in base.layers if layer.weights]) == 13  # VGG16's conv layers
    assert all(not layer.trainable for layer in base.layers)
    assert base.trainable_weights == []
    trainable = {w.path for w in classifier.model.trainable_weights}
    assert trainable == {"probabilities/kernel", "probabilities/bias"}
    head_layers = [layer.name for layer in classifier.head.layers]
    assert head_layers == ["features", "feature_scale", "flatten", "dropout", "probabilities"]
    assert classifier.model.output_shape == (None, 2)


def test_a_fit_leaves_the_base_weights_unchanged() -> None:
    classifier = build_classifier(get_backbone("vgg16"), size=32, n_classes=2, weights=None)
    before = weights_sha256(classifier.base)
    model = classifier.model
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, size=(8, 32, 32, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[[0, 1] * 4]
    model.fit(x, y, epochs=1, verbose=0)
    assert weights_sha256(classifier.base) == before


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_frozen_and_has_its_fine_tuning_cut(name: str) -> None:
    spec = get_backbone(name)
    base, _, tail = build_front(spec, size=spec.min_size, weights=None, fine_tune=True)
    assert tail is not None
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable, "fine-tuning must train the last block"
    tail_ids = {id(layer) for layer in tail.layers}
    assert all(id(layer) in tail_ids for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert len(trainable) < len([layer for layer in base.layers if layer.weights])
    frozen_base, _, no_tail = build_front(spec, size=spec.min_size, weights=None)
    assert no_tail is None
    assert frozen_base.trainable_weights == []


def test_unknown_backbone_and_bad_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown backbone 'vgg99'.*vgg16"):
        get_backbone("vgg99")
    with pytest.raises(ConfigError, match="below inceptionv3's minimum of 75"):
        build_base(get_backbone("inceptionv3"), size=32, weights=None)
    with pytest.raises(ConfigError, match="dropout"):
        HeadConfig(dropout=1.5)


def test_base_weights_come_from_a_file(tmp_path: Path) -> None:
    spec = get_backbone("vgg16")
    source = build_base(spec, size=32, weights=None)
    path = tmp_path / "base.weights.h5"
    source.save_weights(path)
    loaded = build_base(spec, size=32, weights=parse_base_weights(str(path)))
    assert weights_sha256(loaded) == weights_sha256(source)
    assert loaded.trainable_weights == []


def test_weights_sources_are_checked(tmp_path: Path) -> None:
    assert parse_base_weights("imagenet") == "imagenet"
    assert parse_base_weights("none") is None
    assert parse_base_weights(None) is None
    with pytest.raises(WeightsError, match=r"missing\.h5' does not exist"):
        parse_base_weights(str(tmp_path / "missing.h5"))
    wrong = tmp_path / "resnet.weights.h5"
    build_base(get_backbone("mobilenet"), size=32, weights=None).save_weights(wrong)
    with pytest.raises(WeightsError, match="does not hold vgg16 base weights"):
        build_base(get_backbone("vgg16"), size=32, weights=wrong)


def test_saved_model_loads_with_plain_keras_and_no_trainer_code(tmp_path: Path) -> None:
    classifier = build_classifier(get_backbone("vgg16"), size=32, n_classes=2, weights=None)
    path = tmp_path / "model.keras"
    classifier.model.save(path)
    x = np.random.default_rng(2).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    expected = classifier.model.predict_on_batch(x)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras\n"
        f"m = keras.models.load_model({str(path)!r}, compile=False)\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, m.predict_on_batch(x))\n"
        "assert not any(n == 'trainer' or n.startswith('trainer.') for n in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-6)
