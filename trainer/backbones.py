"""The convolutional bases the trainer offers: constructor, preprocessing, sizes, last block."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from trainer.errors import ConfigError, WeightsError

PreprocessingMode = Literal["caffe", "tf"]
BaseWeights = Literal["imagenet"] | Path | None


@dataclass(frozen=True, slots=True)
class BackboneSpec:
    """How to build one Keras application as a headless feature extractor.

    Attributes:
        name: The name in settings and the registry (``vgg16``).
        application: The constructor's name in ``keras.applications`` (``VGG16``).
        module: The ``keras.applications`` sub-module holding ``preprocess_input``.
        preprocessing: ``caffe`` (RGB->BGR, ImageNet mean subtracted) or ``tf`` ([-1, 1]).
        default_size: The input side the ImageNet weights were trained at.
        min_size: The smallest input side the architecture accepts.
        fine_tune_cut: Where the last block starts, as (layer name, ``input``|``output``):
            fine-tuning trains everything between this tensor and the base's output.
    """

    name: str
    application: str
    module: str
    preprocessing: PreprocessingMode
    default_size: int
    min_size: int
    fine_tune_cut: tuple[str, Literal["input", "output"]]

    def constructor(self) -> Any:
        """The ``keras.applications`` constructor."""
        return getattr(keras.applications, self.application)

    def preprocess_input(self) -> Any:
        """Keras's reference preprocessing function for this backbone."""
        return getattr(keras.applications, self.module).preprocess_input


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("vgg16", "VGG16", "vgg16", "caffe", 224, 32, ("block4_pool", "output")),
        BackboneSpec("vgg19", "VGG19", "vgg19", "caffe", 224, 32, ("block4_pool", "output")),
        BackboneSpec(
            "resnet50", "ResNet50", "resnet50", "caffe", 224, 32, ("conv4_block6_out", "output")
        ),
        BackboneSpec(
            "resnet50v2",
            "ResNet50V2",
            "resnet_v2",
            "tf",
            224,
            32,
            ("conv4_block6_out", "output"),
        ),
        BackboneSpec(
            "inceptionv3", "InceptionV3", "inception_v3", "tf", 299, 75, ("mixed9", "output")
        ),
        # Xception's last residual sum has an automatic name, so cut at its consumer's input.
        BackboneSpec(
            "xception", "Xception", "xception", "tf", 299, 71, ("block14_sepconv1", "input")
        ),
        BackboneSpec(
            "mobilenet", "MobileNet", "mobilenet", "tf", 224, 32, ("conv_pw_12_relu", "output")
        ),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    """The spec called `name` (case-insensitive); `ConfigError` listing the choices if unknown."""
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}"
        ) from None


def parse_base_weights(value: str | Path | None) -> BaseWeights:
    """Read a weights setting: ``imagenet``, ``none`` (or None) or an existing file path."""
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, str) and value.lower() == "imagenet":
        return "imagenet"
    path = Path(value)
    if not path.is_file():
        raise WeightsError(
            f"base weights file {str(path)!r} does not exist; give an existing .weights.h5 "
            "file, 'imagenet' (needs internet) or 'none'"
        )
    return path


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
    except (OSError, ValueError) as exc:  # download failure or unsupported size
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


def file_sha256(path: Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
