"""The seed tutorial's augmentation (shear, zoom, horizontal flip) as Keras layers."""

from __future__ import annotations

import keras

SHEAR = 0.2
ZOOM = 0.2


def augmentation(*, seed: int | None = None) -> keras.Sequential:
    """Random shear, zoom and horizontal flip for training images only.

    The seed passed ``shear_range=0.2`` to ``ImageDataGenerator``, which reads it as
    degrees (a no-op in practice); ``RandomShear`` reads 0.2 as a shear intensity
    (about 11 degrees), the amount the tutorial evidently meant. Edges are filled with
    the nearest pixel, as ``ImageDataGenerator`` did.
    """
    return keras.Sequential(
        [
            keras.layers.RandomShear(x_factor=SHEAR, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom(ZOOM, fill_mode="nearest", seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed),
        ],
        name="augmentation",
    )
