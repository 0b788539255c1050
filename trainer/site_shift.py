"""A "shifted" copy of a labelled split: the same films as another site might send them.

Val is a random carve of the same acquisitions as train, so it flatters a model: every
published model loses specificity on the Kermany authors' own test split, and more at
other hospitals. These site changes are the ones that differ between acquisitions and
archives: framing (zoomed in, zoomed out with a border), the grey-level curve (gamma,
contrast), detector noise, lossy re-compression, a lower native resolution, and burned-in
text markers in the corners. Each is applied to the film as the model would see it
(decoded by the serving rule at the model's input side) and written as a file, so the
copy is evaluated exactly as any labelled folder is (`cxr-screen evaluate`).

Deterministic: a shift's random parts (noise, marker places) are seeded by the image's
SHA-256 and the shift's name, so the same split always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from trainer.data import LabelledSplit, scan_split
from trainer.evaluate import Scored, evaluate_scored
from trainer.metrics import Evaluation, evaluate_probabilities
from worker.pipeline import ModelInput, Prepared, prepare_file

logger = logging.getLogger(__name__)

Pixels = npt.NDArray[np.uint8]


def _resized(image: Image.Image, side: int) -> Image.Image:
    return image.resize((side, side), Image.Resampling.BILINEAR)


def zoom_in(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """Tighter collimation: the central 85 % of the film, enlarged back."""
    side = image.width
    margin = round(side * 0.075)
    return _resized(image.crop((margin, margin, side - margin, side - margin)), side)


def zoom_out(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """Wider framing: the film shrunk to 80 % inside a black border."""
    side = image.width
    inner = round(side * 0.8)
    canvas = Image.new(image.mode, (side, side), 0)
    offset = (side - inner) // 2
    canvas.paste(_resized(image, inner), (offset, offset))
    return canvas


def _curve(image: Image.Image, gamma: float, low: float = 0.0, high: float = 1.0) -> Image.Image:
    values = np.asarray(image, dtype=np.float32) / 255.0
    mapped = low + (high - low) * np.power(values, gamma)
    return Image.fromarray(np.clip(np.rint(mapped * 255.0), 0, 255).astype(np.uint8))


def darker(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """Another processing curve: gamma 1.5."""
    return _curve(image, 1.5)


def flatter(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """Lower contrast and a brighter floor, as a washed-out print or another LUT."""
    return _curve(image, 0.8, low=0.12, high=0.88)


def noisy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Detector noise: Gaussian, sigma 8 grey levels."""
    values = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 8.0, (image.height, image.width))
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def recompressed(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """An archive's lossy copy: JPEG at quality 25."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=25)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("L")


def low_resolution(image: Image.Image, _: np.random.Generator) -> Image.Image:
    """A detector with half the resolution: down to half the side and back."""
    side = image.width
    return _resized(_resized(image, side // 2), side)


def markers(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Burned-in side markers and text in two corners, as many sites put them."""
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    side = image.width
    font = ImageFont.load_default(size=max(10, side // 10))
    corners = [(0.05, 0.05), (0.8, 0.05), (0.05, 0.85), (0.75, 0.88)]
    picks = rng.choice(len(corners), size=2, replace=False)
    for pick, text in zip(picks, ("R", "PORTABLE"), strict=True):
        x, y = corners[int(pick)]
        size = font if text == "R" else ImageFont.load_default(size=max(8, side // 22))
        draw.text((int(x * side), int(y * side)), text, fill=255, font=size)
    return marked


Shift = Callable[[Image.Image, np.random.Generator], Image.Image]
SHIFTS: dict[str, Shift] = {
    "zoom_in": zoom_in,
    "zoom_out": zoom_out,
    "gamma_1.5": darker,
    "low_contrast": flatter,
    "noise": noisy,
    "jpeg_q25": recompressed,
    "half_resolution": low_resolution,
    "markers": markers,
}


def shifted(pixels: Pixels, name: str, sha256: str) -> Pixels:
    """The model input `pixels` (grey RGB, side x side) under site change `name`."""
    seed = int.from_bytes(hashlib.sha256(f"{name}:{sha256}".encode()).digest()[:8], "big")
    grey = Image.fromarray(np.asarray(pixels)[..., 0])
    return np.asarray(SHIFTS[name](grey, np.random.default_rng(seed)).convert("L"), np.uint8)


@dataclass(frozen=True, slots=True)
class ShiftedCopy:
    """A written shifted copy: its folder (one sub-folder per class) and what was skipped."""

    root: Path
    written: int
    skipped: list[tuple[Path, str]]

    def split(self, classes: tuple[str, ...]) -> LabelledSplit:
        """The copy as a labelled split, to evaluate like any folder."""
        return scan_split(self.root, name="shifted", classes=classes)


def write_shifted(
    split: LabelledSplit, target: Path, model_input: ModelInput, names: tuple[str, ...] = ()
) -> ShiftedCopy:
    """Write every image of `split` under each shift as `target/<CLASS>/<shift>/<sha>.png`.

    Files already there are kept (same name, same bytes: the copy is deterministic), so
    a second evaluation of the same split writes nothing.
    """
    chosen = names or tuple(SHIFTS)
    written = 0
    skipped: list[tuple[Path, str]] = []
    for image in split.images:
        outputs = [target / image.label / name / f"{image.sha256}.png" for name in chosen]
        if all(path.is_file() for path in outputs):
            continue
        prepared = prepare_file(image.path, model_input)
        if not isinstance(prepared, Prepared):
            skipped.append((image.path, prepared.message))
            continue
        for name, path in zip(chosen, outputs, strict=True):
            if path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            Image.fromarray(shifted(prepared.image, name, image.sha256)).save(partial, "PNG")
            partial.replace(path)
            written += 1
    logger.info("shifted copy of %s: %d files written under %s", split.name, written, target)
    return ShiftedCopy(target, written, skipped)


@dataclass(frozen=True, slots=True)
class ShiftedFigures:
    """A model on the shifted copy of a split: pooled over every shift, and per shift."""

    pooled: Evaluation
    per_shift: dict[str, Evaluation]
    copy: ShiftedCopy
    calibration: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the pooled figures, and AUC / sensitivity / specificity per shift."""
        return {
            **self.pooled.to_dict(),
            "calibration": self.calibration,
            "shifts": {
                name: {
                    "n": e.n,
                    "auc": e.auc,
                    "sensitivity": e.sensitivity,
                    "specificity": e.specificity,
                }
                for name, e in self.per_shift.items()
            },
        }


def score_shifted(
    scored: Scored, *, classes: tuple[str, ...], positive_class: str, threshold: float
) -> tuple[Evaluation, dict[str, Evaluation]]:
    """Figures of a scored shifted copy at `threshold`: pooled, and per shift (the folder
    each file sits in)."""
    pooled = evaluate_scored(
        scored, classes=classes, positive_class=positive_class, threshold=threshold
    )
    names = np.asarray([image.path.parent.name for image in scored.split.images])
    truth = scored.split.label_indices(classes)
    per_shift = {
        name: evaluate_probabilities(
            scored.probabilities[names == name],
            truth[names == name],
            classes=classes,
            positive_class=positive_class,
            threshold=threshold,
        )
        for name in SHIFTS
        if (names == name).any()
    }
    return pooled, per_shift
