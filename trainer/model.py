"""The transfer model: preprocessing, a frozen backbone base and a small classification head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import keras

from trainer.backbones import build_base
from trainer.errors import ConfigError
from trainer.preprocessing import preprocessing_layer
from worker.pipeline.backbones import BackboneSpec, BaseWeights

Pooling = Literal["flatten", "avg"]

INPUT_NAME = "image"
HEAD_NAME = "head"
BASE_LAYER_NAME = "base"
PREPROCESS_NAME = "preprocess"


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """The classification head on the base's feature map.

    The seed's head is ``Flatten`` + ``Dense(softmax)``. Its features are scaled to unit
    norm (see `build_head`) and it trains with dropout and a light L2 penalty: the plain
    seed head on raw features saturates its softmax, changes with every seed and ranks
    a zoomed copy of val at AUC 0.86; this one stays at 0.995 there.

    Attributes:
        pooling: ``flatten`` (the seed's head) or ``avg`` (global average pooling).
        dropout: Dropout rate on the pooled features during training.
        l2: L2 penalty on the dense kernel (the pooled features have unit norm).
    """

    pooling: Pooling = "flatten"
    dropout: float = 0.5
    l2: float = 1e-5

    def __post_init__(self) -> None:
        if self.pooling not in ("flatten", "avg"):
            raise ConfigError(f"head pooling {self.pooling!r} is not 'flatten' or 'avg'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"head dropout {self.dropout} is not in [0, 1)")
        if self.l2 < 0.0:
            raise ConfigError(f"head l2 {self.l2} is negative")


@dataclass(slots=True)
class Classifier:
    """The parts of one transfer model, sharing their layers.

    Attributes:
        model: image (RGB 0..255) -> class probabilities; the artifact that is saved.
        base: The backbone base (frozen unless fine-tuning).
        head: base features -> class probabilities.
        extractor: image -> the features the cache holds (the base output, or the
            last block's input when fine-tuning).
        tail: cached features -> base output when fine-tuning the last block, else None.
    """

    model: keras.Model
    base: keras.Model
    head: keras.Model
    extractor: keras.Model
    tail: keras.Model | None


def build_head(
    feature_shape: tuple[int, ...],
    n_classes: int,
    config: HeadConfig,
    *,
    feature_scale: float = 1.0,
    seed: int | None = None,
) -> keras.Model:
    """The head: scale features, pool, dropout, dense softmax.

    `feature_scale` is one number for all features (not a per-feature standardisation),
    chosen by the trainer so that the pooled feature vector has unit length on average:
    the learning rate and the L2 penalty then mean the same for every backbone, while a
    feature that never fired in training stays at zero instead of being blown up.
    """
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least two classes, got {n_classes}")
    inputs = keras.Input(feature_shape, name="features")
    x = keras.layers.Rescaling(feature_scale, name="feature_scale")(inputs)
    if config.pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(config.l2) if config.l2 > 0 else None,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name="probabilities",
    )(x)
    return keras.Model(inputs, outputs, name=HEAD_NAME)


def build_front(
    spec: BackboneSpec, *, size: int, weights: BaseWeights, fine_tune: bool = False
) -> tuple[keras.Model, keras.Model, keras.Model | None]:
    """Preprocessing + base: returns (base, extractor, tail).

    Without fine-tuning the extractor ends at the base's output and `tail` is None.
    With it, the extractor ends where the last block starts, `tail` maps that tensor to
    the base's output, and only the tail's layers (batch norms excepted) are trainable.
    """
    base = build_base(spec, size=size, weights=weights, name=BASE_LAYER_NAME)
    image = keras.Input((size, size, 3), name=INPUT_NAME)
    preprocessed = preprocessing_layer(spec.preprocessing, name=PREPROCESS_NAME)(image)
    if not fine_tune:
        extractor = keras.Model(image, base(preprocessed, training=False), name="extractor")
        return base, extractor, None
    cut, tail = unfreeze_last_block(base, spec)
    lower = keras.Model(base.input, cut, name="lower")
    extractor = keras.Model(image, lower(preprocessed, training=False), name="extractor")
    return base, extractor, tail


def cut_cache_layer(spec: BackboneSpec) -> str:
    """The feature cache's name for the tensor where the last block starts (the layer
    cached when fine-tuning)."""
    name, side = spec.fine_tune_cut
    return f"{name}:{side}"


def last_block(base: keras.Model, spec: BackboneSpec) -> tuple[Any, keras.Model]:
    """(The tensor where the base's last block starts, the block as a model sharing the
    base's layers); nothing is made trainable."""
    layer_name, side = spec.fine_tune_cut
    cut_layer = base.get_layer(layer_name)
    cut = cut_layer.input if side == "input" else cut_layer.output
    return cut, keras.Model(cut, base.output, name="tail")


def last_block_layers(base: keras.Model, spec: BackboneSpec) -> list[keras.layers.Layer]:
    """The base's own layers in its last block that hold weights, in the base's order:
    what fine-tuning may change."""
    _, tail = last_block(base, spec)
    in_tail = {id(layer) for layer in tail.layers}
    return [layer for layer in base.layers if id(layer) in in_tail and layer.weights]


def unfreeze_last_block(base: keras.Model, spec: BackboneSpec) -> tuple[Any, keras.Model]:
    """Make the base's last block trainable; return (its input tensor, the block as a model).

    The block is a sub-model of the base's own graph, so it shares the base's layers:
    training it updates the base that is saved. Batch norms stay frozen: their
    statistics come from ImageNet-sized batches, not a few dozen radiographs.
    """
    cut, tail = last_block(base, spec)
    tail_layers = {id(layer) for layer in tail.layers}
    base.trainable = True
    for layer in base.layers:
        layer.trainable = id(layer) in tail_layers and not isinstance(
            layer, keras.layers.BatchNormalization
        )
    return cut, tail


def assemble(
    *, base: keras.Model, head: keras.Model, size: int, preprocessing: keras.layers.Layer
) -> keras.Model:
    """The servable model: image -> preprocessing -> base -> head."""
    image = keras.Input((size, size, 3), name=INPUT_NAME)
    x = preprocessing(image)
    x = base(x, training=False)
    return keras.Model(image, head(x), name="cxr_classifier")


def build_classifier(
    spec: BackboneSpec,
    *,
    size: int,
    n_classes: int,
    weights: BaseWeights,
    head_config: HeadConfig | None = None,
    feature_scale: float = 1.0,
    fine_tune: bool = False,
    seed: int | None = None,
) -> Classifier:
    """The whole transfer model (the seed's recipe with `HeadConfig()` defaults)."""
    base, extractor, tail = build_front(spec, size=size, weights=weights, fine_tune=fine_tune)
    head = build_head(
        tuple(base.output.shape[1:]),
        n_classes,
        head_config or HeadConfig(),
        feature_scale=feature_scale,
        seed=seed,
    )
    model = assemble(
        base=base, head=head, size=size, preprocessing=extractor.get_layer(PREPROCESS_NAME)
    )
    return Classifier(model=model, base=base, head=head, extractor=extractor, tail=tail)


def temper_head(head: keras.Model, temperature: float) -> None:
    """Divide the head's logits by `temperature`, in place.

    softmax((W x + b) / T) = softmax((W / T) x + b / T): temperature scaling is the same
    dense layer with scaled weights, so the saved model, the serving path, Grad-CAM and
    every reader of the artifact need nothing new.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature {temperature} is not positive")
    dense = head.get_layer("probabilities")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / temperature, bias / temperature])
