"""Score any saved model on a labelled folder, reusing cached base features when it can."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt

from trainer.backbones import get_backbone, weights_sha256
from trainer.data import LabelledSplit, prepare_images
from trainer.features import FeatureCache, extract_missing, feature_cache, load_features
from trainer.metrics import Evaluation, evaluate_probabilities
from trainer.model import (
    BASE_LAYER_NAME,
    HEAD_NAME,
    INPUT_NAME,
    PREPROCESS_NAME,
    cut_cache_layer,
    last_block,
)
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput, Predictor

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
SplitProgress = Callable[[int, int], None]
# Cached features scored at a time: a fine-tuned VGG16's block-4 output is 400 kB a film.
SCORE_CHUNK = 256


@dataclass(slots=True)
class Scored:
    """A model's probabilities on the decodable images of a split."""

    split: LabelledSplit
    probabilities: FloatArray
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # Images whose 16-bit answer was not finite and that the float32 model answered, as
    # the worker does (see `worker.pipeline.Predictor`).
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


def evaluation_input(model: keras.Model, decode: DecodeOptions) -> ModelInput:
    """How evaluation turns files into `model`'s input: the serving rule at its input side."""
    return ModelInput.of(int(model.input_shape[1]), decode)


def score_model(
    predictor: Predictor,
    split: LabelledSplit,
    *,
    backbone: str,
    cache_root: Path,
    decode: DecodeOptions,
    batch_size: int = 32,
    progress: SplitProgress | None = None,
    trained_from: str | None = None,
) -> Scored:
    """The class probabilities `predictor` gives every decodable image of `split`.

    Files go through the serving pipeline's prepare stage at the model's input size.
    For float32 models this trainer built, the base runs through the feature cache,
    keyed by the hash of the model's own base weights: re-evaluating the active model on
    the folder a candidate was just evaluated on costs only its head. A fine-tuned model
    (its base no longer hashes as `trained_from`, the base weights it was trained from)
    is scored from the features of its last block's input that training cached under
    `trained_from`, once one image shows that its lower blocks still compute them: its
    last block and head are all that run. A 16-bit predictor runs every image through
    the whole model, with the worker's float32 fallback (its weights hash like the
    float32 model's, but its features differ from the cached ones).
    """
    model = predictor.keras_model
    model_input = evaluation_input(model, decode)
    parts = model_parts(model) if predictor.float32_model is None else None
    if parts is None:
        return _score_images(predictor, split, model_input, batch_size, progress)
    preprocess, base, head = parts
    size = model_input.size
    image = keras.Input((size, size, 3), name=INPUT_NAME)
    base_sha = weights_sha256(base)
    spec = get_backbone(backbone)
    if trained_from is not None and base_sha != trained_from:
        cut, tail = last_block(base, spec)
        lower = keras.Model(base.input, cut, name="lower")
        tuned = _score_cached(
            split,
            extractor=keras.Model(image, lower(preprocess(image), training=False)),
            cache=feature_cache(
                cache_root, backbone=backbone, base_sha=trained_from, model_input=model_input,
                layer=cut_cache_layer(spec),
            ),
            score=lambda features: head(tail(features, training=False), training=False),
            model_input=model_input, batch_size=batch_size, progress=progress,
        )  # fmt: skip
        if tuned is not None:
            return tuned
        logger.warning(
            "the lower blocks of %s's base do not compute the features cached for the base "
            "weights %s: scoring every image through the whole model",
            model.name,
            trained_from[:12],
        )
    extractor = keras.Model(image, base(preprocess(image), training=False))
    cache = feature_cache(
        cache_root,
        backbone=backbone,
        base_sha=base_sha,
        model_input=model_input,
        layer="base_output",
    )
    outcome = extract_missing(
        split.images,
        cache=cache,
        extractor=extractor,
        model_input=model_input,
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


def _score_cached(
    split: LabelledSplit,
    *,
    extractor: keras.Model,
    cache: FeatureCache,
    score: Callable[[FloatArray], object],
    model_input: ModelInput,
    batch_size: int,
    progress: SplitProgress | None,
) -> Scored | None:
    """`score` on the cached features of `split` (missing ones extracted by `extractor`),
    in chunks; None when `extractor` does not compute what the cache holds for the
    split's first image (then the cache belongs to other weights)."""
    outcome = extract_missing(
        split.images, cache=cache, extractor=extractor, model_input=model_input,
        batch_size=batch_size, progress=progress,
    )  # fmt: skip
    kept = split.without(path for path, _ in outcome.failed)
    if not kept.images:
        return None
    probe = prepare_images(kept.images[:1], model_input)
    if not probe.images:
        return None
    own = np.asarray(extractor.predict_on_batch(probe.pixels.astype(np.float32)))[0]
    cached = cache.load(probe.images[0].sha256)
    if not np.allclose(own, cached, rtol=1e-3, atol=1e-3 * float(np.max(np.abs(cached)) or 1.0)):
        return None
    rows = []
    for start in range(0, len(kept.images), SCORE_CHUNK):
        features = load_features(kept.images[start : start + SCORE_CHUNK], cache=cache)
        rows.append(np.asarray(keras.ops.convert_to_numpy(score(features)), dtype=np.float32))
    return Scored(kept, np.concatenate(rows), outcome.failed)


def _score_images(
    predictor: Predictor,
    split: LabelledSplit,
    model_input: ModelInput,
    batch_size: int,
    progress: SplitProgress | None,
) -> Scored:
    failed: list[tuple[Path, str]] = []
    rows: list[FloatArray] = []
    fell_back = 0
    total = len(split.images)
    for start in range(0, total, batch_size):
        prepared = prepare_images(split.images[start : start + batch_size], model_input)
        failed.extend(prepared.failed)
        if prepared.images:
            answer = predictor(prepared.pixels)
            fell_back += int(answer.fell_back.sum())
            rows.append(answer.values)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    kept = split.without(path for path, _ in failed)
    n_out = int(predictor.keras_model.output_shape[-1])
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
