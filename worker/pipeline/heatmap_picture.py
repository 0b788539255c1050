"""The picture a reader sees of a heatmap: the model input beside its Grad-CAM overlay.

One rendering serves the PNG kept beside the archived file, `cxr-screen inspect
--heatmap` and the Secondary Capture sent to the PACS, so what a reader sees is the
same everywhere: left the greyscale image the model was given, right the same image
with the heatmap blended in (transparent where the map is cold), and under both a
caption strip that says what it is and that it is not for diagnosis (burned in: a
Secondary Capture has no overlay plane a viewer must show).
"""

from __future__ import annotations

import functools
from io import BytesIO

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

# Each panel is the model input enlarged this much (224 px -> 448 px): large enough to
# read, no detail invented (nearest would show blocks; bilinear is what viewers do).
SCALE = 2
CAPTION_HEIGHT = 44
CAPTION_MARGIN = 6
FONT_SIZE = 15
# Below this share of the peak the map is not drawn: faint evidence stays off the image.
FLOOR = 0.2
MAX_ALPHA = 0.55

# A perceptual blue -> cyan -> yellow -> red ramp (control points of "turbo"), linear
# between them: no matplotlib in a worker.
_RAMP = np.array(
    [
        [48, 18, 59],
        [70, 134, 251],
        [27, 229, 181],
        [164, 252, 60],
        [251, 185, 56],
        [228, 70, 11],
        [122, 4, 3],
    ],
    dtype=np.float32,
)


def colour(cam: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(H, W) in [0, 1] -> (H, W, 3) RGB 0-255 on the ramp."""
    position = np.clip(cam, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    share = (position - low)[..., None]
    mixed: npt.NDArray[np.float32] = _RAMP[low] * (1.0 - share) + _RAMP[high] * share
    return mixed


def overlay(image: npt.NDArray[np.uint8], cam: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The heatmap blended into the image; the image shows through where the map is cold."""
    grey = image.astype(np.float32)
    strength = np.clip((cam - FLOOR) / (1.0 - FLOOR), 0.0, 1.0)[..., None]
    alpha = strength * MAX_ALPHA
    blended = grey * (1.0 - alpha) + colour(cam) * alpha
    picture: npt.NDArray[np.uint8] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return picture


def render(
    image: npt.NDArray[np.uint8], cam: npt.NDArray[np.float32], caption: str
) -> npt.NDArray[np.uint8]:
    """(size, size, 3) model input and (size, size) map -> the captioned two-panel picture.

    Returns:
        RGB uint8, (SCALE * size + CAPTION_HEIGHT, 2 * SCALE * size, 3).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape} and heatmap {cam.shape} do not match")
    side = image.shape[0] * SCALE
    panels = [image, overlay(image, cam)]
    canvas = Image.new("RGB", (2 * side, side + CAPTION_HEIGHT), (0, 0, 0))
    for index, panel in enumerate(panels):
        enlarged = Image.fromarray(panel).resize((side, side), Image.Resampling.BILINEAR)
        canvas.paste(enlarged, (index * side, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for line, text in enumerate(_wrap(caption, draw, font, 2 * side - 2 * CAPTION_MARGIN)[:2]):
        draw.text(
            (CAPTION_MARGIN, side + CAPTION_MARGIN // 2 + line * (FONT_SIZE + 3)),
            text,
            fill=(255, 255, 255),
            font=font,
        )
    return np.asarray(canvas, dtype=np.uint8)


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The caption's font, loaded once per process (not once per heatmap)."""
    return ImageFont.load_default(size=FONT_SIZE)


def _wrap(
    text: str,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width: int,
) -> list[str]:
    """`text` broken into lines at spaces, each at most `width` pixels wide."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and draw.textlength(trial, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def caption(*, label: str, probability: float, threshold: float, model_version: str) -> str:
    """The burned-in words: what the picture is, the verdict it explains, not a diagnosis."""
    return (
        f"cxr-screen AI heatmap, not for diagnosis. Model {model_version}: {label}, "
        f"probability {probability:.3f} (threshold {threshold:.3f}). Left: model input; "
        "right: where the evidence for the finding lies (Grad-CAM)."
    )


def png_bytes(pixels: npt.NDArray[np.uint8]) -> bytes:
    """The picture as PNG."""
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
