"""Where the lungs are on a frontal chest film, roughly: a measuring stick for heatmaps.

No annotations ship with the data, so the lung fields are estimated the classical way:
the lungs are the large dark (air-filled) regions inside the body, and the air around
the body is dark too but touches the image border. So: threshold at Otsu's level, take
the dark pixels, remove every dark region connected to the border (outside air), and the
bounding box of what is left (its 2nd-98th percentile extent, so that specks do not
stretch it) is the lung-field box; where that box is implausible (opacified lungs are
not dark), the lung fields' usual place in the body box is taken instead. The body box
is the extent of the bright pixels together with the enclosed dark ones.

Good enough to tell a heatmap on the chest from one on a corner marker, a collar bone or
the air beside the patient; not a segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Box = tuple[int, int, int, int]  # top, left, bottom, right (exclusive)


@dataclass(frozen=True, slots=True)
class Regions:
    """The estimated boxes of one image, in its pixel coordinates."""

    body: Box
    lungs: Box
    shape: tuple[int, int]

    def area_share(self, box: Box) -> float:
        """The share of the image area `box` covers."""
        top, left, bottom, right = box
        return (bottom - top) * (right - left) / (self.shape[0] * self.shape[1])


def otsu_level(grey: npt.NDArray[np.float32]) -> float:
    """Otsu's threshold of values in 0-255."""
    histogram, edges = np.histogram(grey, bins=256, range=(0, 256))
    weights = histogram.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(weights)
    above = below[-1] - below
    mean_below = np.cumsum(weights * centres) / np.maximum(below, 1)
    total = (weights * centres).sum()
    mean_above = (total - np.cumsum(weights * centres)) / np.maximum(above, 1)
    between = below * above * (mean_below - mean_above) ** 2
    return float(centres[int(np.argmax(between))])


def _connected_to_border(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The pixels of `mask` connected (4-neighbourhood) to the image border."""
    reached = np.zeros_like(mask)
    reached[0, :], reached[-1, :], reached[:, 0], reached[:, -1] = (
        mask[0, :],
        mask[-1, :],
        mask[:, 0],
        mask[:, -1],
    )
    while True:
        grown = reached.copy()
        grown[1:, :] |= reached[:-1, :]
        grown[:-1, :] |= reached[1:, :]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= mask
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def _extent(mask: npt.NDArray[np.bool_], low: float = 2.0, high: float = 98.0) -> Box | None:
    rows, cols = np.nonzero(mask)
    if len(rows) < 50:
        return None
    top, bottom = np.percentile(rows, [low, high])
    left, right = np.percentile(cols, [low, high])
    return int(top), int(left), int(bottom) + 1, int(right) + 1


def estimate(image: npt.NDArray[np.uint8]) -> Regions:
    """The body and lung-field boxes of a frontal chest film (grey or RGB, 0-255)."""
    grey = image.astype(np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    height, width = grey.shape
    whole: Box = (0, 0, height, width)
    dark = grey < otsu_level(grey)
    outside = _connected_to_border(dark)
    enclosed = dark & ~outside
    body = _extent(~outside, 1.0, 99.0) or whole
    lungs = _extent(enclosed)
    if lungs is None or not _plausible(lungs, body):
        # Opacified lungs (dense pneumonia) are not dark: take the lung fields' usual
        # place in the body box instead of a box around whatever air is left.
        lungs = _usual_lung_fields(body)
    return Regions(body=body, lungs=lungs, shape=(height, width))


def _plausible(lungs: Box, body: Box) -> bool:
    """Both lungs in it: a good part of the body's area, about centred left-right."""
    area = (lungs[2] - lungs[0]) * (lungs[3] - lungs[1])
    body_area = (body[2] - body[0]) * (body[3] - body[1])
    width = body[3] - body[1]
    centre_offset = abs((lungs[1] + lungs[3]) / 2 - (body[1] + body[3]) / 2)
    return area >= 0.3 * body_area and centre_offset <= 0.15 * width


def _usual_lung_fields(body: Box) -> Box:
    """Rows 15-80 % and columns 10-90 % of the body box: where PA lung fields lie."""
    top, left, bottom, right = body
    height, width = bottom - top, right - left
    return (
        top + int(0.15 * height),
        left + int(0.10 * width),
        top + int(0.80 * height),
        left + int(0.90 * width),
    )


def mass_share(cam: npt.NDArray[np.float32], box: Box) -> float:
    """The share of the heatmap's total mass inside `box` (0 for an empty map)."""
    total = float(cam.sum())
    if total <= 0:
        return 0.0
    top, left, bottom, right = box
    return float(cam[top:bottom, left:right].sum()) / total
