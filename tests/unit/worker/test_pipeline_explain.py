"""Grad-CAM finds the evidence where a model's decision really comes from.

The detector models here say "positive" in proportion to how much bright blob an image
holds, so their evidence is exactly the blob: a correct heatmap puts its mass there,
at the right place after stretching to the input size, whatever the artifact's shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from trainer.backbones import get_backbone
from trainer.model import build_classifier
from worker.pipeline.explain import Explainer, ExplainError

SIZE = 32
BLOB = 8


def _blob_images(corners: list[tuple[int, int]]) -> np.ndarray:
    """Dark images, each with one bright BLOB x BLOB square at its (row, column) corner."""
    images = np.full((len(corners), SIZE, SIZE, 3), 20, dtype=np.uint8)
    for image, (row, column) in zip(images, corners, strict=True):
        image[row : row + BLOB, column : column + BLOB] = 235
    return images


def _detector(filters: int = 1) -> keras.layers.Conv2D:
    """Fires where a 3 x 3 neighbourhood is bright (inputs scaled to 0..1)."""
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.Constant(1 / 27),
        bias_initializer=keras.initializers.Constant(-0.5),
        name="detector",
    )


def _decision() -> keras.layers.Dense:
    """Positive grows with the mean detector response."""
    return keras.layers.Dense(
        2,
        activation="softmax",
        kernel_initializer=keras.initializers.Constant(np.array([[-8.0, 8.0]])),
        bias_initializer="zeros",
    )


def _flat_model() -> keras.Model:
    image = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.MaxPooling2D(2)(x)  # the explained map is 16 x 16: stretched back
    x = _detector()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, _decision()(x))


def _nested_model() -> keras.Model:
    """The trainer's artifact shape: preprocessing, a nested base, a nested head."""
    base_in = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.MaxPooling2D(2)(base_in)
    x = _detector()(x)
    x = keras.layers.MaxPooling2D(2, name="base_pool")(x)
    base = keras.Model(base_in, x, name="base")
    head_in = keras.Input(tuple(base.output.shape[1:]))
    y = keras.layers.GlobalAveragePooling2D()(head_in)
    head = keras.Model(head_in, _decision()(y), name="head")
    image = keras.Input((SIZE, SIZE, 3), name="image")
    return keras.Model(image, head(base(keras.layers.Rescaling(1 / 255)(image))))


def _mass_in_blob(heatmap: np.ndarray, corner: tuple[int, int]) -> float:
    row, column = corner
    # Half a map cell of slack around the blob: the map is coarser than the image.
    box = heatmap[max(row - 1, 0) : row + BLOB + 1, max(column - 1, 0) : column + BLOB + 1]
    return float(box.sum() / heatmap.sum())


CORNERS = [(0, 0), (4, 20), (24, 24), (12, 2)]


@pytest.mark.parametrize("build", [_flat_model, _nested_model], ids=["flat", "nested"])
def test_the_heatmap_lies_on_the_evidence(build: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    build().save(path)
    model = keras.models.load_model(path, compile=False)  # found from the artifact
    explainer = Explainer.of(model)
    assert explainer.layer == "detector"
    images = _blob_images(CORNERS)
    positive = np.asarray(model.predict_on_batch(images.astype(np.float32)))[:, 1]
    assert (positive > 0.5).all(), "the blob is evidence for the positive class"

    maps = explainer.heatmaps(images, class_index=1)

    assert maps.shape == (len(CORNERS), SIZE, SIZE)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0
    assert maps.max() == pytest.approx(1.0)
    for heatmap, corner in zip(maps, CORNERS, strict=True):
        assert _mass_in_blob(heatmap, corner) >= 0.9, corner
        peak = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
        assert corner[0] <= peak[0] < corner[0] + BLOB, (corner, peak)
        assert corner[1] <= peak[1] < corner[1] + BLOB, (corner, peak)


def test_no_evidence_gives_an_empty_map_and_the_other_class_points_elsewhere() -> None:
    explainer = Explainer.of(_flat_model())
    blank = np.full((1, SIZE, SIZE, 3), 20, dtype=np.uint8)
    assert not explainer.heatmaps(blank, class_index=1).any()
    # Evidence against NORMAL is the blob too: its map has nothing to show.
    assert not explainer.heatmaps(_blob_images([(0, 0)]), class_index=0).any()


def test_the_trainer_artifact_is_explained_at_vgg16s_last_convolution() -> None:
    classifier = build_classifier(get_backbone("vgg16"), size=SIZE, n_classes=2, weights=None)
    explainer = Explainer.of(classifier.model)
    assert explainer.layer == "block5_conv3"
    maps = explainer.heatmaps(_blob_images(CORNERS[:2]), class_index=1)
    assert maps.shape == (2, SIZE, SIZE)
    assert np.isfinite(maps).all()
    assert 0.0 <= maps.min() <= maps.max() <= 1.0


def test_a_model_without_a_convolutional_map_is_refused() -> None:
    image = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(image)
    model = keras.Model(image, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ExplainError, match="no convolutional map"):
        Explainer.of(model)
