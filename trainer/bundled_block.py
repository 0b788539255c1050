"""The fine-tuned last block of a bundled model: its weights in one file, float16 where the
model's answers do not change, put back onto the site's ImageNet base at install.

A fine-tuned model differs from the ImageNet base only in its last block (VGG16's block 5:
7.1 M parameters, 14 MB in float16), so the bundle carries that block and the head; the
lower blocks still come from the site's own weights file, checked by their tensors' hash.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from trainer.errors import RegistryError
from trainer.model import last_block_layers
from worker.pipeline.backbones import BackboneSpec

TUNED_FILE = "tuned_block.npz"
# float16 keeps 11 significant bits: a probability may move by a few thousandths through
# 3 convolutions; more than this, or any verdict that flips, and float32 is stored.
FLOAT16_TOLERANCE = 0.01

FloatArray = npt.NDArray[np.float32]
BlockWeights = dict[str, list[npt.NDArray[Any]]]
# images (N x side x side x 3, RGB 0..255) -> positive-class probabilities
Scorer = Callable[[FloatArray], FloatArray]


@dataclass(frozen=True, slots=True)
class Precision:
    """Which precision the block is stored in, and how the model's answers moved.

    Attributes:
        dtype: ``float16`` or ``float32``.
        images: Images the two precisions were compared on (the check image included).
        max_abs_difference: Largest change of the positive-class probability.
        verdicts_changed: Images whose verdict at the threshold differs.
    """

    dtype: str
    images: int
    max_abs_difference: float
    verdicts_changed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the bundle's card."""
        return {
            "dtype": self.dtype,
            "compared_on_images": self.images,
            "max_abs_difference": self.max_abs_difference,
            "verdicts_changed": self.verdicts_changed,
            "tolerance": FLOAT16_TOLERANCE,
        }


def block_weights(base: keras.Model, spec: BackboneSpec) -> BlockWeights:
    """The float32 weights of the base's last block, by layer name."""
    return {
        layer.name: [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]
        for layer in last_block_layers(base, spec)
    }


def apply_block(base: keras.Model, weights: BlockWeights, spec: BackboneSpec) -> None:
    """Put `weights` into the base's last block, in place, as float32.

    Raises:
        RegistryError: the layers or shapes are not the ones of this backbone's block.
    """
    layers = {layer.name: layer for layer in last_block_layers(base, spec)}
    if set(layers) != set(weights):
        raise RegistryError(
            f"the tuned block holds layers {sorted(weights)}, the {spec.name} base's last block "
            f"is {sorted(layers)}: export the bundle again"
        )
    for name, values in weights.items():
        current = layers[name].get_weights()
        shapes = [tuple(v.shape) for v in values]
        if shapes != [tuple(c.shape) for c in current]:
            raise RegistryError(
                f"the tuned block's {name} has shapes {shapes}, the base's "
                f"{[tuple(c.shape) for c in current]}: export the bundle again"
            )
        layers[name].set_weights([np.asarray(v, dtype=np.float32) for v in values])


def as_float16(weights: BlockWeights) -> BlockWeights:
    """The weights rounded to float16 (what the file holds when float16 is chosen)."""
    return {name: [v.astype(np.float16) for v in values] for name, values in weights.items()}


def choose_precision(
    score: Scorer,
    set_block: Callable[[BlockWeights], None],
    weights: BlockWeights,
    images: FloatArray,
    *,
    threshold: float,
) -> tuple[BlockWeights, Precision]:
    """float16 when the model's answers on `images` stay within `FLOAT16_TOLERANCE` and no
    verdict flips, else float32; the model is left with the chosen weights in place.

    Args:
        score: The whole model's positive-class probabilities, with the block as set.
        set_block: Puts block weights into that model.
        weights: The trained (float32) weights.
        images: What to compare the two on.
        threshold: The operating threshold verdicts are taken at.
    """
    set_block(weights)
    full = score(images)
    half = as_float16(weights)
    set_block(half)
    rounded = score(images)
    difference = float(np.max(np.abs(full - rounded))) if len(images) else 0.0
    flipped = int(np.sum((full >= threshold) != (rounded >= threshold)))
    if difference <= FLOAT16_TOLERANCE and flipped == 0:
        return half, Precision("float16", len(images), difference, flipped)
    set_block(weights)
    return weights, Precision("float32", len(images), difference, flipped)


def save_block(path: Path, weights: BlockWeights) -> None:
    """One ``.npz`` entry per weight tensor, ``<layer>.<index>``; no pickled objects."""
    arrays = {
        f"{name}.{i}": value for name, values in weights.items() for i, value in enumerate(values)
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    path.write_bytes(_deterministic_zip(buffer.getvalue()))


def load_block(path: Path) -> BlockWeights:
    """The weights `save_block` wrote, by layer, in their stored precision.

    Raises:
        RegistryError: the file is absent or not such a file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {key: np.asarray(data[key]) for key in data.files}
    except FileNotFoundError:
        raise RegistryError(f"{path} is absent: the bundle is damaged; export it again") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RegistryError(f"cannot read {path} ({exc}): export the bundle again") from None
    weights: dict[str, dict[int, npt.NDArray[Any]]] = {}
    for key, value in entries.items():
        name, _, index = key.rpartition(".")
        if not name or not index.isdigit():
            raise RegistryError(f"{path} has an entry {key!r} that is not <layer>.<index>")
        weights.setdefault(name, {})[int(index)] = value
    return {name: [values[i] for i in sorted(values)] for name, values in weights.items()}


def _deterministic_zip(data: bytes) -> bytes:
    """The same archive with fixed member times: the same weights give the same bytes
    (and the same hash in the card) whenever they are exported."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target,
    ):
        for info in sorted(source.infolist(), key=lambda i: i.filename):
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.external_attr = 0o644 << 16
            target.writestr(fixed, source.read(info.filename))
    return out.getvalue()
