"""Grad-CAM: where in the image the model's evidence for a class lies (Selvaraju et al. 2017).

The explained layer is found in the artifact itself: the last layer of the convolutional
base (the last nested model that convolves) whose output is still a spatial map (rank
4, not a pooling). For the trainer's
artifacts (input -> preprocessing -> base -> head, the base a nested model) that is
VGG16's `block5_conv3` (14 x 14 at 224 px), ResNet's last block output, and so on; a
flat model (no nested base) works the same. No trainer code is needed to find it.

The model is split there into `front` (image -> activations A) and `back` (A -> class
probabilities). A heatmap is relu(sum_k alpha_k A_k) with alpha_k the spatial mean of
d p_class / d A_k, normalised to [0, 1] per image and stretched to the input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
POOLING_CLASSES = ("Pooling", "pooling")


class ExplainError(Exception):
    """The artifact has no convolutional map to explain (a dense-only model)."""


@dataclass(frozen=True, slots=True)
class Explainer:
    """A model split at its last convolutional map, for Grad-CAM heatmaps.

    Attributes:
        front: image (RGB 0-255, float32) -> activations of the explained layer.
        back: those activations -> class probabilities (the rest of the model).
        layer: The explained layer's name (recorded with each heatmap).
        input_size: The model's input side; heatmaps come back at this size.
    """

    front: Any
    back: Any
    layer: str
    input_size: int

    @classmethod
    def of(cls, keras_model: Any) -> Explainer:
        """Split `keras_model` (as loaded from its artifact) at its last convolutional map.

        Raises:
            ExplainError: no layer outputs a spatial map.
        """
        import keras

        top = [layer for layer in keras_model.layers if not _is_input(layer)]
        nested = [i for i, layer in enumerate(top) if _is_convolutional_base(layer)]
        image = keras.Input(tuple(keras_model.input_shape[1:]), name="image")
        if nested:
            # The trainer's shape: preprocessing, then the base as one nested model,
            # then the head (which may rescale the map: not the base). Split inside the
            # last nested model that convolves.
            at = nested[-1]
            base = top[at]
            target = _spatial_layers(base)[-1]
            x = image
            for layer in top[:at]:
                x = layer(x)
            inner = keras.Model(base.inputs, target.output)
            activations = inner(x)
            rest = [*_after(base, target), *top[at + 1 :]]
        else:
            # Maps from a convolution on: a rescaled input is spatial but holds no
            # learnt features (its "heatmap" would be a plain input saliency).
            convolving = [i for i, layer in enumerate(top) if "Conv" in type(layer).__name__]
            start = convolving[0] if convolving else len(top)
            spatial = [layer for layer in top[start:] if _is_spatial(layer)]
            if not spatial:
                raise ExplainError(
                    f"model {keras_model.name!r} has no convolutional map to explain"
                )
            target = spatial[-1]
            inner = keras.Model(keras_model.inputs, target.output)
            activations = inner(image)
            rest = _after(keras_model, target)
        front = keras.Model(image, activations, name="explain_front")
        maps = keras.Input(tuple(activations.shape[1:]), name="activations")
        y = maps
        for layer in rest:
            y = layer(y)
        back = keras.Model(maps, y, name="explain_back")
        return cls(front, back, target.name, int(keras_model.input_shape[1]))

    def heatmaps(self, batch: npt.NDArray[Any], class_index: int) -> FloatArray:
        """Grad-CAM maps of `class_index` for (N, size, size, 3) images, 0-255.

        Returns:
            float32 (N, size, size) in [0, 1]; an image without positive evidence for
            the class gets all zeros.
        """
        images = np.asarray(batch, dtype=np.float32)
        activations = np.asarray(self.front.predict_on_batch(images), dtype=np.float32)
        gradients = _gradients(self.back, activations, class_index)
        weights = gradients.mean(axis=(1, 2), keepdims=True)  # alpha_k per image
        cams = np.maximum((weights * activations).sum(axis=-1), 0.0)
        peaks = cams.max(axis=(1, 2), keepdims=True)
        cams = np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)
        return _stretch(cams, self.input_size)


def _is_input(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def _is_spatial(layer: Any) -> bool:
    """Outputs a (batch, height, width, channels) map, and is no pooling layer."""
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    name = type(layer).__name__
    return len(shape) == 4 and not any(part in name for part in POOLING_CLASSES)


def _is_convolutional_base(layer: Any) -> bool:
    """A nested model with convolutions and a spatial map in it."""
    inner = getattr(layer, "layers", None) or []
    return any("Conv" in type(sub).__name__ for sub in inner) and bool(_spatial_layers(layer))


def _spatial_layers(model: Any) -> list[Any]:
    """The spatial layers of a nested model, in order ([] for a plain layer)."""
    layers = getattr(model, "layers", None)
    if not layers or not hasattr(model, "inputs"):
        return []
    return [layer for layer in layers if not _is_input(layer) and _is_spatial(layer)]


def _after(model: Any, target: Any) -> list[Any]:
    """The layers of `model` after `target`, which must form a chain to its output.

    True of every backbone in the table: after the last spatial map come only pooling
    or flattening layers, one after another.
    """
    layers = [layer for layer in model.layers if not _is_input(layer)]
    following = layers[layers.index(target) + 1 :]
    previous = target
    for layer in following:
        inbound = {id(t) for t in _inputs_of(layer)}
        if id(previous.output) not in inbound or len(inbound) != 1:
            raise ExplainError(
                f"after {target.name!r} the model branches ({layer.name!r}); Grad-CAM "
                "needs a chain from the explained layer to the output"
            )
        previous = layer
    return following


def _inputs_of(layer: Any) -> list[Any]:
    node = layer._inbound_nodes[0]
    return list(node.input_tensors)


def _gradients(back: Any, activations: FloatArray, class_index: int) -> FloatArray:
    """d back(A)[:, class_index] / d A, for the backend Keras runs on."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        maps = tf.convert_to_tensor(activations)
        with tf.GradientTape() as tape:
            tape.watch(maps)
            score = tf.reduce_sum(back(maps, training=False)[:, class_index])
        return np.asarray(tape.gradient(score, maps), dtype=np.float32)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def score(maps: Any) -> Any:
            return jnp.sum(back(maps, training=False)[:, class_index])

        return np.asarray(jax.grad(score)(jnp.asarray(activations)), dtype=np.float32)
    raise ExplainError(f"heatmaps need the TensorFlow or JAX backend, not {backend!r}")


def _stretch(cams: FloatArray, size: int) -> FloatArray:
    """Each map bilinearly resized to size x size, as the image was stretched to the input."""
    from PIL import Image

    if cams.shape[1:] == (size, size):
        return cams.astype(np.float32)
    out = np.empty((len(cams), size, size), dtype=np.float32)
    for i, cam in enumerate(cams):
        resized = Image.fromarray(cam.astype(np.float32)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        out[i] = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return out
