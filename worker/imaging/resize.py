"""The model's input: a radiograph stretched to size x size, grey in three uint8 channels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from worker.imaging.radiograph import Radiograph

MODEL_INPUT_SIZE = 224


def to_model_input(radiograph: Radiograph, size: int = MODEL_INPUT_SIZE) -> npt.NDArray[np.uint8]:
    """Resize to (size, size, 3) uint8, grey replicated to three channels.

    The image is stretched, not letterboxed, because the training set (Kermany et al.)
    was stretched to 224 x 224. Downsampling averages areas (Pillow BOX, like OpenCV's
    INTER_AREA) so thin structures do not alias; an axis that must grow uses bilinear
    interpolation instead, which BOX would turn into blocky nearest-neighbour. Resizing
    is done on the float image, so there is a single rounding to 8 bits at the end: an
    image already at `size` x `size` comes back with exactly its own grey levels.
    """
    pixels = np.ascontiguousarray(radiograph.pixels, dtype=np.float32)
    height, width = pixels.shape
    image = Image.fromarray(pixels)
    if (width, height) != (size, size):
        shrinking = width >= size and height >= size
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        image = image.resize((size, size), resample)
    grey = np.asarray(image, dtype=np.float32) * np.float32(255.0)
    levels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(levels[:, :, np.newaxis], 3, axis=2)
