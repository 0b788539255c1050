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

from trainer.calibration import calibration_figures
from trainer.data import LabelledSplit, scan_split
from trainer.evaluate import Scored
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


# The changes `random_site_change` makes during training. The other SHIFTS (JPEG
# re-compression, a lower resolution, burned-in markers) are never trained on, so the
# shifted copy's figures on them stay a measure of changes the model has not seen.
TRAINED_FAMILIES = ("framing", "grey-level curve", "noise")
# Part of the cache view name of stored site-change copies: bump it when
# `random_site_change` changes, so old features are not reused.
SITE_CHANGE_VERSION = 1
TRAINED_SHIFTS = ("zoom_in", "zoom_out", "gamma_1.5", "low_contrast", "noise")
HELD_OUT_SHIFTS = tuple(name for name in SHIFTS if name not in TRAINED_SHIFTS)


def _framed(image: Image.Image, scale: float, dx: float, dy: float) -> Image.Image:
    """Zoomed by `scale` (above 1: a central crop enlarged; below: shrunk into a black
    border), moved by (dx, dy) of the side."""
    side = image.width
    if scale >= 1.0:
        inner = side / scale
        left = (side - inner) / 2 + dx * (side - inner)
        top = (side - inner) / 2 + dy * (side - inner)
        return image.resize(
            (side, side), Image.Resampling.BILINEAR, box=(left, top, left + inner, top + inner)
        )
    inner_side = max(1, round(side * scale))
    canvas = Image.new(image.mode, (side, side), 0)
    room = side - inner_side
    canvas.paste(
        _resized(image, inner_side), (round(room / 2 + dx * room), round(room / 2 + dy * room))
    )
    return canvas


def random_site_change(pixels: Pixels, sha256: str, view: str) -> Pixels:
    """The model input `pixels` (grey RGB) as some other site might have framed, processed
    and exposed it: random framing, grey-level curve and noise, drawn per film and view.

    Strengths span the shifted copy's fixed ones (zoom 0.8 to 1.2, gamma 0.6 to 1.7, a
    contrast window, noise sigma 0 to 10) so training sees them as the same film.
    Seeded by the film's hash and the view, so a stored view is reproducible.
    """
    seed = int.from_bytes(hashlib.sha256(f"site:{view}:{sha256}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    grey = Image.fromarray(np.asarray(pixels)[..., 0])
    if rng.random() < 0.8:
        scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.2))))
        grey = _framed(grey, scale, float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3)))
    if rng.random() < 0.8:
        gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
        low = float(rng.uniform(0.0, 0.15)) if rng.random() < 0.5 else 0.0
        high = float(rng.uniform(0.85, 1.0)) if rng.random() < 0.5 else 1.0
        grey = _curve(grey, gamma, low=low, high=high)
    values = np.asarray(grey, dtype=np.float64)
    if rng.random() < 0.5:
        values = values + rng.normal(0.0, float(rng.uniform(2.0, 10.0)), values.shape)
    out = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=-1)


def shifted_folder(cache_root: Path, model_input: ModelInput) -> Path:
    """Where the shifted copy for models of this input is kept (beside the feature cache)."""
    return cache_root / "shifted" / f"{model_input.size}-{model_input.cache_tag}"


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
        # Labelled folders are often links into an image store (as training reads them).
        prepared = prepare_file(image.path, model_input, follow_symlinks=True)
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
    """A model on the shifted copy of a split: pooled over every shift, per shift, and
    pooled over the shifts that training never applies (`HELD_OUT_SHIFTS`)."""

    pooled: Evaluation
    per_shift: dict[str, Evaluation]
    copy: ShiftedCopy | None
    calibration: dict[str, object] = field(default_factory=dict)
    held_out: Evaluation | None = None
    # (is_positive, positive-class probability) per file, for the gate's comparison.
    scores: tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]] | None = field(
        default=None, repr=False
    )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the pooled figures, and AUC / sensitivity / specificity per shift."""

        def brief(e: Evaluation) -> dict[str, object]:
            return {"n": e.n, "auc": e.auc, "sensitivity": e.sensitivity,
                    "specificity": e.specificity}  # fmt: skip

        return {
            **self.pooled.to_dict(),
            "calibration": self.calibration,
            "shifts": {name: brief(e) for name, e in self.per_shift.items()},
            "held_out_shifts": list(HELD_OUT_SHIFTS),
            "held_out": brief(self.held_out) if self.held_out is not None else None,
        }


def shift_names(split: LabelledSplit) -> npt.NDArray[np.str_]:
    """The site change of each file of a shifted copy (the folder it sits in)."""
    return np.asarray([image.path.parent.name for image in split.images])


def shifted_figures(
    probabilities: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
    names: npt.NDArray[np.str_],
    *,
    classes: tuple[str, ...],
    positive_class: str,
    threshold: float,
    copy: ShiftedCopy | None = None,
) -> ShiftedFigures:
    """Figures of a scored shifted copy at `threshold`: pooled, per shift, held out."""

    def at(mask: npt.NDArray[np.bool_]) -> Evaluation:
        return evaluate_probabilities(
            probabilities[mask], truth[mask], classes=classes, positive_class=positive_class,
            threshold=threshold,
        )  # fmt: skip

    every = np.ones(len(names), dtype=bool)
    per_shift = {name: at(names == name) for name in SHIFTS if (names == name).any()}
    held = np.isin(names, HELD_OUT_SHIFTS)
    positive = classes.index(positive_class)
    calibration = calibration_figures(probabilities, truth, positive)
    return ShiftedFigures(
        at(every),
        per_shift,
        copy,
        calibration,
        held_out=at(held) if held.any() else None,
        scores=(truth == positive, probabilities[:, positive]),
    )


def score_shifted(
    scored: Scored,
    *,
    classes: tuple[str, ...],
    positive_class: str,
    threshold: float,
    copy: ShiftedCopy | None = None,
) -> ShiftedFigures:
    """`shifted_figures` of a shifted copy scored as a folder."""
    return shifted_figures(
        scored.probabilities,
        scored.split.label_indices(classes),
        shift_names(scored.split),
        classes=classes,
        positive_class=positive_class,
        threshold=threshold,
        copy=copy,
    )
