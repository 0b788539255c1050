"""`to_model_input`: stretch to size x size, area downsampling, grey in three channels."""

from __future__ import annotations

import numpy as np
import pytest

from worker.imaging import Radiograph, ScanMetadata, to_model_input

META = ScanMetadata(format="png")


def _radiograph(pixels: np.ndarray) -> Radiograph:
    return Radiograph(pixels=pixels.astype(np.float32), metadata=META)


def test_output_is_size_by_size_rgb_uint8_with_equal_channels() -> None:
    rng = np.random.default_rng(0)
    model_input = to_model_input(_radiograph(rng.random((300, 500))), 224)

    assert model_input.shape == (224, 224, 3)
    assert model_input.dtype == np.uint8
    assert (model_input[..., 0] == model_input[..., 1]).all()
    assert (model_input[..., 0] == model_input[..., 2]).all()


def test_image_at_the_model_size_keeps_every_grey_level() -> None:
    levels = np.arange(224 * 224).reshape(224, 224) % 256

    model_input = to_model_input(_radiograph(levels / 255.0))

    np.testing.assert_array_equal(model_input[..., 0], levels)


def test_non_square_image_is_stretched_not_letterboxed() -> None:
    pixels = np.ones((448, 896))  # 1:2, all white: a letterbox would add black bars

    model_input = to_model_input(_radiograph(pixels))

    assert (model_input == 255).all()


def test_downsampling_averages_areas() -> None:
    """A 1-pixel checkerboard must become mid grey, not alias into stripes or moire."""
    checker = (np.indices((896, 896)).sum(axis=0) % 2).astype(np.float32)

    model_input = to_model_input(_radiograph(checker))

    assert np.abs(model_input.astype(int) - 128).max() <= 1


def test_small_image_is_interpolated_up() -> None:
    ramp = np.tile(np.linspace(0, 1, 112), (112, 1))

    model_input = to_model_input(_radiograph(ramp))[..., 0].astype(int)

    steps = np.diff(model_input[100])
    assert steps.min() >= 0  # monotone, smooth: no blocky repeated columns
    assert (steps == 0).sum() < 60


@pytest.mark.parametrize("size", [64, 299])
def test_other_model_sizes(size: int) -> None:
    assert to_model_input(_radiograph(np.zeros((100, 120))), size).shape == (size, size, 3)
