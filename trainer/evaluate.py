"""Score any saved model on a labelled folder, reusing cached base features when it can."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt

from trainer.backbones import weights_sha256
from trainer.data import LabelledSplit, decode_for_model
from trainer.features import extract_missing, load_features
from trainer.metrics import Evaluation, evaluate_probabilities
from trainer.model import BASE_LAYER_NAME, HEAD_NAME, INPUT_NAME, PREPROCESS_NAME
from trainer.train import feature_cache
from worker.accelerator import answer_non_finite
from worker.errors import ScreeningError
from worker.imaging import DecodeOptions

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
SplitProgress = Callable[[int, int], None]


@dataclass(slots=True)
class Scored:
    """A model's probabilities on the decodable images of a split."""

    split: LabelledSplit
    probabilities: FloatArray
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # Images whose 16-bit answer was not finite and that the float32 model answered, as
    # the worker does (see `worker.inference.LoadedModel.predict`).
    fell_back: int = 0


def model_parts(model: keras.Model) -> tuple[keras.Layer, keras.Model, keras.Model] | None:
    """(preprocessing, base, head) of a model this trainer built, or None for others."""
    try:
        return (
            model.get_layer(PREPROCESS_NAME),
            model.get_layer(BASE_LAYER_NAME),
            model.get_layer(HEAD_NAME),
        )
    except ValueError:
        return None


def score_model(
    model: keras.Model,
    split: LabelledSplit,
    *,
    backbone: str,
    cache_root: Path,
    decode: DecodeOptions,
    batch_size: int = 32,
    progress: SplitProgress | None = None,
    float32_model: keras.Model | None = None,
) -> Scored:
    """The model's class probabilities for every decodable image of `split`.

    For models this trainer built, the base runs through the feature cache, keyed by
    the hash of the model's own base weights: re-evaluating the active model on the
    folder a candidate was just evaluated on costs only its head.

    `float32_model` marks `model` as a 16-bit rebuild of it: every image then goes through
    the whole `model` (its weights hash like the float32 model's but its features differ
    from the cached ones), and the float32 model answers where it is not finite, as in
    the worker.
    """
    size = int(model.input_shape[1])
    parts = model_parts(model) if float32_model is None else None
    if parts is None:
        return _score_images(model, split, size=size, decode=decode, batch_size=batch_size,
                             progress=progress, float32_model=float32_model)  # fmt: skip
    preprocess, base, head = parts
    image = keras.Input((size, size, 3), name=INPUT_NAME)
    extractor = keras.Model(image, base(preprocess(image), training=False))
    cache = feature_cache(
        cache_root,
        backbone=backbone,
        base_sha=weights_sha256(base),
        size=size,
        layer="base_output",
        options=decode,
    )
    outcome = extract_missing(
        split.images,
        cache=cache,
        extractor=extractor,
        load=lambda path: decode_for_model(path, size=size, options=decode),
        batch_size=batch_size,
        progress=progress,
    )
    kept = split.without(path for path, _ in outcome.failed)
    if not kept.images:
        empty = np.zeros((0, int(head.output_shape[-1])), dtype=np.float32)
        return Scored(kept, empty, outcome.failed)
    features = load_features(kept.images, cache=cache)
    probabilities = np.asarray(head.predict(features, batch_size=256, verbose=0), dtype=np.float32)
    return Scored(kept, probabilities, outcome.failed)


def _score_images(
    model: keras.Model,
    split: LabelledSplit,
    *,
    size: int,
    decode: DecodeOptions,
    batch_size: int,
    progress: SplitProgress | None,
    float32_model: keras.Model | None,
) -> Scored:
    failed: list[tuple[Path, str]] = []
    rows: list[FloatArray] = []
    fell_back = 0
    total = len(split.images)
    for start in range(0, total, batch_size):
        pixels = []
        for item in split.images[start : start + batch_size]:
            try:
                pixels.append(decode_for_model(item.path, size=size, options=decode))
            except ScreeningError as exc:
                logger.warning("skipping %s: %s", item.path, exc)
                failed.append((item.path, str(exc)))
        if pixels:
            batch = np.stack(pixels).astype(np.float32)
            out = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
            if float32_model is not None:
                fell_back += int(answer_non_finite(out, batch, float32_model).sum())
            rows.append(out)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    kept = split.without(path for path, _ in failed)
    n_out = int(model.output_shape[-1])
    probabilities = np.concatenate(rows) if rows else np.zeros((0, n_out), dtype=np.float32)
    return Scored(kept, probabilities, failed, fell_back)


def evaluate_scored(
    scored: Scored, *, classes: tuple[str, ...], positive_class: str, threshold: float
) -> Evaluation:
    """Metrics of scored images at the model's threshold."""
    return evaluate_probabilities(
        scored.probabilities,
        scored.split.label_indices(classes),
        classes=classes,
        positive_class=positive_class,
        threshold=threshold,
    )
