"""Backbone preprocessing as built-in Keras layers, so it is saved inside the model."""

from __future__ import annotations

import keras
import numpy as np

from worker.pipeline.backbones import PreprocessingMode

# Part of every feature-cache key: change it when these layers change what they compute.
PREPROCESSING_VERSION = 1

# keras.applications.imagenet_utils "caffe" mode: BGR channel means of ImageNet.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocessing_layer(mode: PreprocessingMode, *, name: str = "preprocess") -> keras.layers.Layer:
    """A frozen layer mapping RGB pixels in 0..255 to what the backbone was trained on.

    ``caffe`` (VGG, ResNet50): a 1x1 convolution whose kernel permutes RGB to BGR and
    whose bias subtracts the ImageNet mean; multiplying by exact ones and zeros keeps it
    equal to ``preprocess_input``. ``tf`` (ResNetV2, Inception, Xception, MobileNet):
    ``x / 127.5 - 1``. Only built-in layers, so ``keras.models.load_model`` needs no
    trainer code.
    """
    if mode == "caffe":
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for out_channel in range(3):
            kernel[0, 0, 2 - out_channel, out_channel] = 1.0
        bias = -np.asarray(CAFFE_MEAN_BGR, dtype="float32")
        layer = keras.layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name)
        # Built here and given its fixed weights, which the saved model then carries.
        layer.build((None, None, None, 3))
        layer.set_weights([kernel, bias])
        return layer
    if mode == "tf":
        return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name=name)
    raise ValueError(f"unknown preprocessing mode {mode!r}")
