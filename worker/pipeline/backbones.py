"""The backbones a model may be built on: one table for settings, trainer and pipeline.

Importing it loads no deep-learning framework: settings validate `CXR_BACKBONE` against
it, the trainer builds bases from it, and tests check every entry's model input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
        import keras

        return getattr(keras.applications, self.application)

    def preprocess_input(self) -> Any:
        """Keras's reference preprocessing function for this backbone."""
        import keras

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


BACKBONE_NAMES = tuple(BACKBONES)


def find_backbone(name: str) -> BackboneSpec | None:
    """The spec called `name` (case-insensitive), or None."""
    return BACKBONES.get(name.strip().lower())


def read_base_weights(value: str | Path | None) -> BaseWeights:
    """A base-weights setting: ``imagenet`` or ``none`` (any case; None is none), else
    the path of an existing weights file.

    Raises:
        ValueError: a path that is not an existing file, with what to give instead.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str) and value.strip().lower() == "imagenet":
        return "imagenet"
    path = Path(value)
    if not path.is_file():
        raise ValueError(
            f"base weights file {str(path)!r} does not exist; give an existing .weights.h5 "
            "file, 'imagenet' (needs internet) or 'none'"
        )
    return path
