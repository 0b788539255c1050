"""Building the convolutional bases of `worker.pipeline.backbones.BACKBONES` with weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np

from trainer.errors import ConfigError, WeightsError
from worker.pipeline.backbones import (
    BACKBONES,
    BackboneSpec,
    BaseWeights,
    find_backbone,
    read_base_weights,
)


def get_backbone(name: str) -> BackboneSpec:
    """The spec called `name` (case-insensitive); `ConfigError` listing the choices if unknown."""
    spec = find_backbone(name)
    if spec is None:
        raise ConfigError(
            f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}"
        )
    return spec


def parse_base_weights(value: str | Path | None) -> BaseWeights:
    """Read a weights setting (see `worker.pipeline.backbones.read_base_weights`)."""
    try:
        return read_base_weights(value)
    except ValueError as exc:
        raise WeightsError(str(exc)) from None


def build_base(
    spec: BackboneSpec, *, size: int, weights: BaseWeights, name: str = "base"
) -> keras.Model:
    """The headless base at `size` x `size` x 3 with its weights, every layer frozen.

    A weights file is loaded after building (``load_weights``), which is how an
    air-gapped site supplies the ImageNet weights that Keras would otherwise download.
    """
    if size < spec.min_size:
        raise ConfigError(
            f"input size {size} is below {spec.name}'s minimum of {spec.min_size} pixels"
        )
    constructor = spec.constructor()
    try:
        base = constructor(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=(size, size, 3),
            name=name,
        )
    except Exception as exc:
        # OSError/ValueError: an unsupported size or a bad cached download. A failed
        # download (no internet) is a bare Exception: keras.utils.get_file re-raises
        # HTTP and URL errors so. Without a download, anything else is a bug and
        # propagates as it was.
        if not isinstance(exc, OSError | ValueError) and weights != "imagenet":
            raise
        raise WeightsError(
            f"cannot build {spec.name} with weights={weights!r} at {size}px: {exc}; "
            "without internet set CXR_BASE_WEIGHTS to a local .weights.h5 file"
        ) from exc
    if isinstance(weights, Path):
        try:
            base.load_weights(weights)
        except (OSError, ValueError) as exc:
            raise WeightsError(
                f"{weights} does not hold {spec.name} base weights ({exc}); give the "
                f"'no top' weights file of {spec.name}"
            ) from exc
    base.trainable = False
    return base


def weights_sha256(model: keras.Model) -> str:
    """SHA-256 of a model's weight tensors in order: identifies the weights, not the file."""
    digest = hashlib.sha256()
    for weight in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight), dtype="<f4")
        digest.update(weight.path.encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
