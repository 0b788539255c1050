"""Train the transfer model on a labelled dataset: cached features (CPU) or online augmentation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from trainer.augment import augmentation
from trainer.backbones import get_backbone, parse_base_weights, weights_sha256
from trainer.calibration import calibration_figures, fit_temperature, tempered
from trainer.data import LabelledDataset, LabelledImage, LabelledSplit, prepare_images
from trainer.errors import ConfigError, DataError
from trainer.features import (
    Extraction,
    FeatureCache,
    PixelTransform,
    extract_missing,
    feature_cache,
    load_features,
    load_views,
)
from trainer.metrics import (
    SHIFTED_THRESHOLD_RULE,
    THRESHOLD_RULE,
    Evaluation,
    evaluate_probabilities,
    screening_threshold,
)
from trainer.model import (
    HEAD_NAME,
    PREPROCESS_NAME,
    HeadConfig,
    assemble,
    build_front,
    build_head,
    cut_cache_layer,
    temper_head,
    unfreeze_last_block,
)
from trainer.site_shift import (
    SHIFTS,
    SITE_CHANGE_VERSION,
    TRAINED_SHIFTS,
    ShiftedFigures,
    random_site_change,
    shift_names,
    shifted,
    shifted_figures,
    shifted_folder,
    write_shifted,
)
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput
from worker.pipeline.backbones import BackboneSpec
from worker.settings import Settings

logger = logging.getLogger(__name__)

SHIFTS_IN_ORDER = tuple(SHIFTS)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
# (phase, done, total): "extract train", "extract val", "train", ...
Progress = Callable[[str, int, int], None]

DEFAULT_POSITIVE_CLASS = "PNEUMONIA"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How to train. The defaults are the seed tutorial's recipe made to generalise.

    Attributes:
        backbone: A name from `trainer.backbones.BACKBONES`.
        input_size: Input side in pixels; None for the backbone's default (224 for VGG16).
        base_weights: ``imagenet``, a weights file path, or None / ``none`` (random).
        epochs: Passes over the training images (the seed: 5).
        batch_size: Images per step (the seed: 32).
        learning_rate: Adam's learning rate for the head.
        head: The classification head (the seed's Flatten + Dense, regularised).
        class_weighting: Weight classes inversely to their frequency (1:2.9 in Kermany),
            so the minority NORMAL class is not sacrificed.
        augment_views: Augmented copies per training image whose features are stored
            beside the originals (the seed's shear/zoom/flip, computed once per image).
            On a zoomed copy of val (a stand-in for another site's positioning) one
            kept specificity at the val-chosen threshold at 0.95 instead of 0.81.
        site_views: Stored copies per training image under random site changes
            (`trainer.site_shift.random_site_change`: framing, grey-level curve,
            noise) followed by the seed's shear/zoom/flip. One by default, in place of
            a plain augmented view (the same extraction cost): on val's shifted copy it
            raised specificity at the threshold from 0.910 to 0.929, and on the changes
            no view trains on from 0.938 to 0.958 (bench/results/recipes.md).
        shifted_evaluation: Also score the evaluation folder's shifted copy
            (`trainer.site_shift`) and choose the threshold so that sensitivity holds
            there as well as on the folder itself.
        calibrate: Fit a temperature on the evaluation folder (`trainer.calibration`)
            and build it into the head, so probabilities mean what they say.
        online_augmentation: Train end to end on freshly augmented images every epoch
            (the seed's way; for GPU hosts) instead of on cached features.
        fine_tune: Also train the base's last block (after the head), from cached
            features of the block's input. On by default: on 200 films per class it
            raised specificity at the threshold on val's shifted copy from 0.870 to
            0.970 and on the changes no view trains on from 0.923 to 0.973
            (bench/results/recipes_finetune.md); the full-data figures are in
            bench/results/train.md.
        fine_tune_epochs: Epochs of that second stage.
        fine_tune_learning_rate: Its (small) learning rate.
        min_sensitivity: Sensitivity the operating threshold must reach on the
            evaluation folder.
        positive_class: The class screening looks for; None picks PNEUMONIA if present,
            else the last class.
        seed: Seeds weights, dropout, shuffling and augmentation.
    """

    backbone: str = "vgg16"
    input_size: int | None = None
    base_weights: str | Path | None = "imagenet"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    head: HeadConfig = field(default_factory=HeadConfig)
    class_weighting: bool = True
    augment_views: int = 0
    site_views: int = 1
    shifted_evaluation: bool = True
    calibrate: bool = True
    online_augmentation: bool = False
    fine_tune: bool = True
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-5
    min_sensitivity: float = 0.95
    positive_class: str | None = None
    seed: int = 1234

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainConfig:
        """The recipe a site's settings describe (CXR_BACKBONE, CXR_TRAIN_EPOCHS, ...),
        with explicit overrides (the options of `cxr-screen train`)."""
        training = settings.training
        config = cls(
            backbone=training.backbone,
            base_weights=training.base_weights,
            epochs=training.train_epochs,
            batch_size=training.train_batch_size,
            online_augmentation=training.online_augmentation,
            fine_tune=training.fine_tune,
        )
        if training.online_augmentation:
            # Online training augments every epoch; stored views are for cached features.
            config = replace(config, augment_views=0, site_views=0)
        return replace(config, **overrides) if overrides else config

    def spec(self) -> BackboneSpec:
        """The backbone spec (raises `ConfigError` for an unknown name)."""
        return get_backbone(self.backbone)

    def size(self) -> int:
        """The input side actually used."""
        return self.input_size or self.spec().default_size

    def validate(self) -> None:
        """Fail fast on values no run could use."""
        self.spec()
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        if self.augment_views < 0 or self.site_views < 0:
            raise ConfigError(
                f"augment_views {self.augment_views} / site_views {self.site_views} is negative"
            )
        if not 0.0 < self.min_sensitivity <= 1.0:
            raise ConfigError(f"min_sensitivity {self.min_sensitivity} is not in (0, 1]")
        if self.online_augmentation and (self.augment_views or self.site_views):
            raise ConfigError(
                "choose online_augmentation or stored augment_views / site_views, not both"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the model card."""
        return {
            "backbone": self.backbone,
            "input_size": self.size(),
            "base_weights": str(self.base_weights),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "head": {
                "pooling": self.head.pooling,
                "dropout": self.head.dropout,
                "l2": self.head.l2,
            },
            "class_weighting": self.class_weighting,
            "augment_views": self.augment_views,
            "site_views": self.site_views,
            "site_changes_trained": list(TRAINED_SHIFTS) if self.site_views else [],
            "shifted_evaluation": self.shifted_evaluation,
            "calibrate": self.calibrate,
            "online_augmentation": self.online_augmentation,
            "fine_tune": self.fine_tune,
            "fine_tune_epochs": self.fine_tune_epochs if self.fine_tune else 0,
            "fine_tune_learning_rate": self.fine_tune_learning_rate,
            "min_sensitivity": self.min_sensitivity,
            "seed": self.seed,
        }


@dataclass(slots=True)
class TrainResult:
    """A trained model and everything measured on the way."""

    model: keras.Model
    classes: tuple[str, ...]
    positive_class: str
    threshold: float
    threshold_rule: str
    evaluation: Evaluation
    history: dict[str, list[float]]
    base_weights_sha256: str
    config: TrainConfig
    counts: dict[str, dict[str, int]]
    timings: dict[str, float]
    skipped_files: list[tuple[str, str]]
    extraction: dict[str, int]
    probabilities: FloatArray = field(repr=False)
    true_idx: npt.NDArray[np.int64] = field(repr=False)
    # The evaluation folder's shifted copy at the chosen threshold (None when off).
    shifted: ShiftedFigures | None = None
    shifted_probabilities: FloatArray | None = field(default=None, repr=False)
    shifted_true_idx: IntArray | None = field(default=None, repr=False)
    shifted_names: npt.NDArray[np.str_] | None = field(default=None, repr=False)
    # Temperature, and ECE with the reliability table before and after it.
    calibration: dict[str, Any] = field(default_factory=dict)
    # The threshold each folder alone would give, and the one chosen.
    thresholds: dict[str, float] = field(default_factory=dict)
    duplicates: dict[str, object] = field(default_factory=dict)


def choose_positive_class(classes: tuple[str, ...], wanted: str | None) -> str:
    """`wanted` if given (must be a class), else PNEUMONIA if present, else the last class."""
    if wanted is not None:
        if wanted not in classes:
            raise ConfigError(f"positive class {wanted!r} is not one of the classes {classes}")
        return wanted
    return DEFAULT_POSITIVE_CLASS if DEFAULT_POSITIVE_CLASS in classes else classes[-1]


def class_weights(labels: npt.NDArray[np.int64], n_classes: int) -> dict[int, float]:
    """``n / (k * n_c)`` per class: every class carries the same total weight."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return {i: float(labels.size / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}


class _KerasProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """Report finished epochs to the caller's progress function."""

    def __init__(self, progress: Progress | None, phase: str, epochs: int) -> None:
        super().__init__()
        self._progress = progress
        self._phase = phase
        self._epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logger.info(
            "%s epoch %d/%d: %s",
            self._phase,
            epoch + 1,
            self._epochs,
            ", ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items()),
        )
        if self._progress is not None:
            self._progress(self._phase, epoch + 1, self._epochs)


def _one_hot(labels: npt.NDArray[np.int64], n_classes: int) -> FloatArray:
    return np.eye(n_classes, dtype=np.float32)[labels]


def _merge_history(into: dict[str, list[float]], history: keras.callbacks.History) -> None:
    for name, values in history.history.items():
        into.setdefault(name, []).extend(float(v) for v in values)


def training_input(config: TrainConfig, decode: DecodeOptions) -> ModelInput:
    """How training (and the feature cache) turns files into the model's input: the
    serving rule (`worker.pipeline.ModelInput`) at the configured input size."""
    return ModelInput.of(config.size(), decode)


def site_view(n: int) -> str:
    """The cache view name of the n-th stored site-change copy (versioned: a change to
    `random_site_change` must not reuse features of the old one)."""
    return f"site-v{SITE_CHANGE_VERSION}-{n}"


def _site_change(view: str) -> PixelTransform:
    def change(pixels: npt.NDArray[np.uint8], image: LabelledImage) -> npt.NDArray[np.uint8]:
        return random_site_change(pixels, image.sha256, view)

    return change


def _cut_layer_name(config: TrainConfig) -> str:
    cached_fine_tune = config.fine_tune and not config.online_augmentation
    return cut_cache_layer(config.spec()) if cached_fine_tune else "base_output"


def train_model(
    dataset: LabelledDataset,
    config: TrainConfig,
    *,
    cache_root: Path,
    decode: DecodeOptions,
    progress: Progress | None = None,
) -> TrainResult:
    """Train on ``dataset.train``, pick the threshold and evaluate on ``dataset.evaluation``.

    With cached features (the default) the frozen base runs once per image ever; the
    head trains on stored features in seconds. The saved model is the same either way:
    image -> preprocessing -> base -> head.
    """
    config.validate()
    built = _build(dataset, config, decode=decode, progress=progress)
    if config.online_augmentation:
        return _train_online(dataset, built)
    return _train_cached(dataset, built, cache_root=cache_root)


@dataclass(frozen=True, slots=True)
class _Built:
    """The built backbone, and what every later step of one run needs to know."""

    config: TrainConfig
    classes: tuple[str, ...]
    positive_class: str
    base: keras.Model
    extractor: keras.Model
    # The base's last block on its own, when fine-tuning from cached features.
    tail: keras.Model | None
    base_sha: str
    model_input: ModelInput
    progress: Progress | None
    seconds: float


@dataclass(frozen=True, slots=True)
class _ShiftedSet:
    """The evaluation folder's shifted copy: written files whose features are cached
    (cached strategy), or the shifted pixels in memory (online strategy)."""

    truth: IntArray
    names: npt.NDArray[np.str_]
    split: LabelledSplit | None = None
    pixels: npt.NDArray[np.uint8] | None = None


@dataclass(frozen=True, slots=True)
class _Splits:
    """The decodable images of both splits, and the files that were skipped."""

    train: LabelledSplit
    evaluation: LabelledSplit
    failed: tuple[tuple[Path, str], ...]
    shifted: _ShiftedSet | None = None

    def counts(self) -> dict[str, dict[str, int]]:
        return {"train": self.train.counts(), "evaluation": self.evaluation.counts()}


@dataclass(frozen=True, slots=True)
class _Features:
    """The cached strategy's input: splits whose base features are stored, per view."""

    splits: _Splits
    views: tuple[str, ...]
    extraction: dict[str, int]
    seconds: float


@dataclass(frozen=True, slots=True)
class _Decoded:
    """The online strategy's input: the decoded pixels of both splits."""

    splits: _Splits
    x_train: npt.NDArray[np.uint8]
    x_eval: npt.NDArray[np.uint8]
    seconds: float


@dataclass(frozen=True, slots=True)
class _Fitted:
    """What fitting produced: the head alone (cached strategy) or the whole servable
    model (online), with its probabilities on the evaluation split."""

    model: keras.Model
    probabilities: FloatArray
    history: dict[str, list[float]]
    seconds: float
    shifted_probabilities: FloatArray | None = None


@dataclass(frozen=True, slots=True)
class _FitData:
    """What a stage trains and validates on: arrays with labels, or batched datasets."""

    x: Any
    y: FloatArray | None
    validation: Any
    batch_size: int | None
    class_weight: dict[int, float] | None


@dataclass(frozen=True, slots=True)
class _Measured:
    """The operating threshold and the evaluation at it."""

    threshold: float
    evaluation: Evaluation
    thresholds: dict[str, float]
    shifted: ShiftedFigures | None


def _build(
    dataset: LabelledDataset,
    config: TrainConfig,
    *,
    decode: DecodeOptions,
    progress: Progress | None,
) -> _Built:
    """Step 1: the base and its feature extractor (and tail, for cached fine-tuning)."""
    spec = config.spec()
    size = config.size()
    positive_class = choose_positive_class(dataset.classes, config.positive_class)
    keras.utils.set_random_seed(config.seed)
    t0 = time.perf_counter()
    weights = parse_base_weights(config.base_weights)
    # Online training fine-tunes end to end; only the cached path caches the block's input.
    cached_fine_tune = config.fine_tune and not config.online_augmentation
    base, extractor, tail = build_front(
        spec, size=size, weights=weights, fine_tune=cached_fine_tune
    )
    base_sha = weights_sha256(base)
    seconds = time.perf_counter() - t0
    logger.info(
        "backbone %s at %dpx, base weights %s (sha256 %s), classes %s",
        spec.name,
        size,
        config.base_weights,
        base_sha[:12],
        list(dataset.classes),
    )
    return _Built(
        config=config,
        classes=dataset.classes,
        positive_class=positive_class,
        base=base,
        extractor=extractor,
        tail=tail,
        base_sha=base_sha,
        model_input=training_input(config, decode),
        progress=progress,
        seconds=seconds,
    )


def _train_cached(dataset: LabelledDataset, built: _Built, *, cache_root: Path) -> TrainResult:
    """Extract (only new images), fit on stored features, assemble and check, evaluate."""
    features = _extract_features(dataset, built, cache_root=cache_root)
    fitted = _fit_on_features(built, features, cache_root=cache_root)
    fitted, calibration = _calibrate(built, fitted, features.splits)
    model = _assemble_checked(built, fitted, features.splits)
    timings = {
        "build_s": built.seconds,
        "features_s": features.seconds,
        "train_s": fitted.seconds,
    }
    return _result(
        built, model, fitted, features.splits, extraction=features.extraction, timings=timings,
        calibration=calibration, duplicates=dataset.duplicate_handling(),
    )  # fmt: skip


def _train_online(dataset: LabelledDataset, built: _Built) -> TrainResult:
    """The seed's way: every epoch sees freshly augmented images, end to end (GPU hosts)."""
    decoded = _decode(dataset, built)
    fitted = _fit_online(built, decoded)
    fitted, calibration = _calibrate(built, fitted, decoded.splits)
    timings = {"build_s": built.seconds, "decode_s": decoded.seconds, "train_s": fitted.seconds}
    return _result(
        built,
        fitted.model,
        fitted,
        decoded.splits,
        extraction={"extracted": 0, "cached": 0},
        timings=timings,
        calibration=calibration,
        duplicates=dataset.duplicate_handling(),
    )


def _view_cache(built: _Built, cache_root: Path, view: str) -> FeatureCache:
    return feature_cache(
        cache_root,
        backbone=built.config.spec().name,
        base_sha=built.base_sha,
        model_input=built.model_input,
        layer=_cut_layer_name(built.config),
        view=view,
    )


def _extract_features(dataset: LabelledDataset, built: _Built, *, cache_root: Path) -> _Features:
    """Step 2, cached strategy: only images never seen before go through the base."""
    config = built.config
    t0 = time.perf_counter()
    failed: list[tuple[Path, str]] = []
    # The shifted copy is counted apart: it is 8 times the evaluation folder.
    extraction = {"extracted": 0, "cached": 0, "shifted_extracted": 0, "shifted_cached": 0}

    def run_extraction(
        split: LabelledSplit,
        view: str,
        transform: keras.Layer | None = None,
        pixel_transform: PixelTransform | None = None,
        counted_as: str = "",
    ) -> LabelledSplit:
        def report(done: int, total: int) -> None:
            if built.progress is not None:
                built.progress(f"features {split.name} {view}", done, total)

        outcome: Extraction = extract_missing(
            split.images,
            cache=_view_cache(built, cache_root, view),
            extractor=built.extractor,
            model_input=built.model_input,
            batch_size=config.batch_size,
            transform=transform,
            pixel_transform=pixel_transform,
            progress=report,
        )
        extraction[f"{counted_as}extracted"] += outcome.extracted
        extraction[f"{counted_as}cached"] += outcome.cached
        failed.extend(outcome.failed)
        return split.without(path for path, _ in outcome.failed)

    train_split = run_extraction(dataset.train, "original")
    eval_split = run_extraction(dataset.evaluation, "original")
    views = ["original"]
    for n in range(1, config.augment_views + 1):
        view = f"augmented-{n}"
        train_split = run_extraction(train_split, view, augmentation(seed=config.seed + n))
        views.append(view)
    for n in range(1, config.site_views + 1):
        view = site_view(n)
        train_split = run_extraction(
            train_split,
            view,
            augmentation(seed=config.seed + 100 + n),
            _site_change(view),
        )
        views.append(view)
    _check_usable(train_split, eval_split, built.positive_class)
    shifted_set = None
    if config.shifted_evaluation:
        copy = write_shifted(
            eval_split, shifted_folder(cache_root, built.model_input), built.model_input
        )
        copy_split = run_extraction(copy.split(built.classes), "original", counted_as="shifted_")
        shifted_set = _ShiftedSet(
            copy_split.label_indices(built.classes), shift_names(copy_split), split=copy_split
        )
    seconds = time.perf_counter() - t0
    logger.info(
        "features: %d extracted, %d from cache, %d files skipped",
        extraction["extracted"],
        extraction["cached"],
        len(failed),
    )
    splits = _Splits(train_split, eval_split, tuple(failed), shifted_set)
    return _Features(splits, tuple(views), extraction, seconds)


def _decode(dataset: LabelledDataset, built: _Built) -> _Decoded:
    """Step 2, online strategy: decode every image of both splits once."""
    t0 = time.perf_counter()
    train_split, x_train, failed = _decode_split(dataset.train, built.model_input)
    eval_split, x_eval, failed_eval = _decode_split(dataset.evaluation, built.model_input)
    _check_usable(train_split, eval_split, built.positive_class)
    shifted_set = (
        _shifted_in_memory(eval_split, x_eval, built.classes)
        if built.config.shifted_evaluation
        else None
    )
    splits = _Splits(train_split, eval_split, (*failed, *failed_eval), shifted_set)
    return _Decoded(splits, x_train, x_eval, time.perf_counter() - t0)


def _fit_on_features(built: _Built, features: _Features, *, cache_root: Path) -> _Fitted:
    """Step 3, cached strategy: the head on stored features (and the last block when
    fine-tuning)."""
    t0 = time.perf_counter()
    config, classes, splits = built.config, built.classes, features.splits
    y_train_idx = splits.train.label_indices(classes)
    y_eval_idx = splits.evaluation.label_indices(classes)
    x_train = load_views(
        splits.train.images,
        caches=[_view_cache(built, cache_root, view) for view in features.views],
    )
    y_train = _one_hot(np.tile(y_train_idx, len(features.views)), len(classes))
    x_eval = load_features(
        splits.evaluation.images, cache=_view_cache(built, cache_root, "original")
    )
    y_eval = _one_hot(y_eval_idx, len(classes))
    tail = built.tail
    base_out_train, base_out_eval = x_train, x_eval
    if tail is not None:
        base_out_train = np.asarray(tail.predict(x_train, batch_size=64, verbose=0))
        base_out_eval = np.asarray(tail.predict(x_eval, batch_size=64, verbose=0))
    head = _new_head(built, base_out_train)
    class_weight = _class_weight(built, y_train_idx)
    history: dict[str, list[float]] = {}
    on_base_output = _FitData(
        base_out_train, y_train, (base_out_eval, y_eval), config.batch_size, class_weight
    )
    _compile_and_fit(head, on_base_output, built, history, label="train head")
    scorer = head
    if tail is not None:
        feature_in = keras.Input(tuple(x_train.shape[1:]), name="cut_features")
        scorer = keras.Model(feature_in, head(tail(feature_in, training=False)), name="tuned")
        on_cut = _FitData(x_train, y_train, (x_eval, y_eval), config.batch_size, class_weight)
        _compile_and_fit(scorer, on_cut, built, history, label="fine-tune", fine_tune=True)
        built.base.trainable = False
    probabilities = np.asarray(scorer.predict(x_eval, batch_size=64, verbose=0))
    shifted_probabilities = None
    shifted_split = splits.shifted.split if splits.shifted is not None else None
    if shifted_split is not None:
        x_shifted = load_features(
            shifted_split.images, cache=_view_cache(built, cache_root, "original")
        )
        shifted_probabilities = np.asarray(scorer.predict(x_shifted, batch_size=64, verbose=0))
    return _Fitted(head, probabilities, history, time.perf_counter() - t0, shifted_probabilities)


def _shifted_in_memory(
    split: LabelledSplit, pixels: npt.NDArray[np.uint8], classes: tuple[str, ...]
) -> _ShiftedSet:
    """The shifted copy of decoded evaluation images, without writing files (the online
    strategy keeps nothing on disk)."""
    truth = split.label_indices(classes)
    rows, labels, names = [], [], []
    for image, label, row in zip(split.images, truth, pixels, strict=True):
        for name in SHIFTS_IN_ORDER:
            grey = shifted(row, name, image.sha256)
            rows.append(np.repeat(grey[..., None], 3, axis=-1))
            labels.append(label)
            names.append(name)
    return _ShiftedSet(np.asarray(labels, dtype=np.int64), np.asarray(names), pixels=np.stack(rows))


def _calibrate(built: _Built, fitted: _Fitted, splits: _Splits) -> tuple[_Fitted, dict[str, Any]]:
    """Step 3b: temperature scaling fitted on the evaluation folder, built into the head.

    One parameter fitted on the folder the threshold is also chosen on: it cannot change
    which film ranks above which (AUC), only what the probabilities claim. The shifted
    copy, which the temperature is not fitted on, shows whether the claim carries over.
    """
    positive = built.classes.index(built.positive_class)
    truth = splits.evaluation.label_indices(built.classes)
    shifted_truth = splits.shifted.truth if splits.shifted is not None else None

    def figures(probabilities: FloatArray, shifted_probabilities: FloatArray | None) -> Any:
        out: dict[str, Any] = {"evaluation": calibration_figures(probabilities, truth, positive)}
        if shifted_probabilities is not None and shifted_truth is not None:
            out["shifted"] = calibration_figures(shifted_probabilities, shifted_truth, positive)
        return out

    before = figures(fitted.probabilities, fitted.shifted_probabilities)
    if not built.config.calibrate:
        return fitted, {"temperature": 1.0, "fitted_on": None, "before": before, "after": before}
    temperature = fit_temperature(fitted.probabilities, truth)
    model = fitted.model
    temper_head(model if model.name == HEAD_NAME else model.get_layer(HEAD_NAME), temperature)
    probabilities = tempered(fitted.probabilities, temperature)
    shifted_probabilities = (
        tempered(fitted.shifted_probabilities, temperature)
        if fitted.shifted_probabilities is not None
        else None
    )
    after = figures(probabilities, shifted_probabilities)
    logger.info(
        "temperature %.3f fitted on %s: ECE %.4f -> %.4f",
        temperature,
        splits.evaluation.name,
        before["evaluation"]["ece"] or float("nan"),
        after["evaluation"]["ece"] or float("nan"),
    )
    calibrated = replace(
        fitted, probabilities=probabilities, shifted_probabilities=shifted_probabilities
    )
    return calibrated, {
        "temperature": temperature,
        "fitted_on": str(splits.evaluation.root),
        "method": "temperature scaling (one parameter, negative log-likelihood) built "
        "into the head's last dense layer",
        "before": before,
        "after": after,
    }


def _fit_online(built: _Built, decoded: _Decoded) -> _Fitted:
    """Step 3, online strategy: the whole model on freshly augmented batches."""
    t0 = time.perf_counter()
    config, n_classes = built.config, len(built.classes)
    y_train_idx = decoded.splits.train.label_indices(built.classes)
    y_eval_idx = decoded.splits.evaluation.label_indices(built.classes)
    x_train = decoded.x_train
    sample = x_train[:: max(1, len(x_train) // 256)].astype(np.float32)
    sample_features = np.asarray(built.extractor.predict(sample, batch_size=32, verbose=0))
    model = _servable(built, _new_head(built, sample_features))
    augment = augmentation(seed=config.seed)
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, _one_hot(y_train_idx, n_classes)))
        .shuffle(len(x_train), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .map(
            lambda x, y: (augment(tf.cast(x, tf.float32), training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    eval_ds = (
        tf.data.Dataset.from_tensor_slices(
            (decoded.x_eval.astype(np.float32), _one_hot(y_eval_idx, n_classes))
        )
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    batches = _FitData(train_ds, None, eval_ds, None, _class_weight(built, y_train_idx))
    history: dict[str, list[float]] = {}
    _compile_and_fit(model, batches, built, history, label="train")
    if config.fine_tune:
        unfreeze_last_block(built.base, config.spec())
        _compile_and_fit(model, batches, built, history, label="fine-tune", fine_tune=True)
    built.base.trainable = False
    probabilities = np.asarray(model.predict(eval_ds, verbose=0))
    shifted_set = decoded.splits.shifted
    shifted_probabilities = None
    if shifted_set is not None and shifted_set.pixels is not None:
        shifted_probabilities = np.asarray(
            model.predict(shifted_set.pixels.astype(np.float32), batch_size=32, verbose=0)
        )
    return _Fitted(model, probabilities, history, time.perf_counter() - t0, shifted_probabilities)


def _compile_and_fit(
    model: keras.Model,
    data: _FitData,
    built: _Built,
    history: dict[str, list[float]],
    *,
    label: str,
    fine_tune: bool = False,
) -> None:
    """Compile `model` for one stage, fit it and add the epochs' figures to `history`.

    Args:
        model: What to train.
        data: What to train and validate on.
        built: The run (its configuration and progress function).
        history: Figures per epoch, extended by this stage's.
        label: The stage's name in log lines and progress reports.
        fine_tune: Use the fine-tuning epochs and learning rate instead of the first
            stage's.
    """
    config = built.config
    epochs = config.fine_tune_epochs if fine_tune else config.epochs
    learning_rate = config.fine_tune_learning_rate if fine_tune else config.learning_rate
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        # XLA compiles each traced shape for seconds; a small head gains nothing.
        jit_compile=False,
    )
    fitted = model.fit(
        data.x,
        data.y,
        validation_data=data.validation,
        epochs=epochs,
        batch_size=data.batch_size,
        class_weight=data.class_weight,
        shuffle=True,
        verbose=0,
        callbacks=[_KerasProgress(built.progress, label, epochs)],
    )
    _merge_history(history, fitted)


def _new_head(built: _Built, base_output: FloatArray) -> keras.Model:
    """A head whose input scale makes these base outputs unit-length on average."""
    config = built.config
    scale = _unit_norm_scale(base_output, config.head.pooling)
    return build_head(
        tuple(built.base.output.shape[1:]), len(built.classes), config.head, feature_scale=scale,
        seed=config.seed,
    )  # fmt: skip


def _class_weight(built: _Built, y_train_idx: npt.NDArray[np.int64]) -> dict[int, float] | None:
    if not built.config.class_weighting:
        return None
    return class_weights(y_train_idx, len(built.classes))


def _servable(built: _Built, head: keras.Model) -> keras.Model:
    return assemble(
        base=built.base,
        head=head,
        size=built.config.size(),
        preprocessing=built.extractor.get_layer(PREPROCESS_NAME),
    )


def _assemble_checked(built: _Built, fitted: _Fitted, splits: _Splits) -> keras.Model:
    """Step 4, cached strategy: the servable model, checked against the path the
    metrics came from."""
    model = _servable(built, fitted.model)
    _check_consistent(
        model, splits.evaluation.images[:4], fitted.probabilities[:4], built.model_input
    )
    return model


def _measure(
    built: _Built,
    probabilities: FloatArray,
    true_idx: npt.NDArray[np.int64],
    shifted_set: _ShiftedSet | None,
    shifted_probabilities: FloatArray | None,
) -> _Measured:
    """Step 5: the screening threshold, and the figures at it.

    The threshold is the highest one at which sensitivity reaches the target on the
    evaluation folder and, when there is one, on its shifted copy: a threshold tuned to
    val alone sits where val's films happen to fall, and another site's films fall
    elsewhere.
    """
    positive = built.classes.index(built.positive_class)
    target = built.config.min_sensitivity
    thresholds = {
        "evaluation": screening_threshold(
            true_idx == positive, probabilities[:, positive], min_sensitivity=target
        )
    }
    if shifted_set is not None and shifted_probabilities is not None:
        thresholds["shifted"] = screening_threshold(
            shifted_set.truth == positive, shifted_probabilities[:, positive],
            min_sensitivity=target,
        )  # fmt: skip
    threshold = min(thresholds.values())
    thresholds["chosen"] = threshold
    evaluation = evaluate_probabilities(
        probabilities, true_idx, classes=built.classes, positive_class=built.positive_class,
        threshold=threshold,
    )  # fmt: skip
    shifted_result = None
    if shifted_set is not None and shifted_probabilities is not None:
        shifted_result = shifted_figures(
            shifted_probabilities, shifted_set.truth, shifted_set.names, classes=built.classes,
            positive_class=built.positive_class, threshold=threshold,
        )  # fmt: skip
    logger.info(
        "evaluation: AUC %.4f, accuracy %.4f, sensitivity %.4f, specificity %.4f at threshold %.4f",
        evaluation.auc or float("nan"),
        evaluation.accuracy,
        evaluation.sensitivity or float("nan"),
        evaluation.specificity or float("nan"),
        threshold,
    )
    if shifted_result is not None:
        logger.info(
            "shifted copy: AUC %.4f, sensitivity %.4f, specificity %.4f",
            shifted_result.pooled.auc or float("nan"),
            shifted_result.pooled.sensitivity or float("nan"),
            shifted_result.pooled.specificity or float("nan"),
        )
    return _Measured(threshold, evaluation, thresholds, shifted_result)


def _result(
    built: _Built,
    model: keras.Model,
    fitted: _Fitted,
    splits: _Splits,
    *,
    extraction: dict[str, int],
    timings: dict[str, float],
    calibration: dict[str, Any],
    duplicates: dict[str, object],
) -> TrainResult:
    """Measure the servable model's evaluation probabilities and gather the result."""
    config = built.config
    true_idx = splits.evaluation.label_indices(built.classes)
    measured = _measure(
        built, fitted.probabilities, true_idx, splits.shifted, fitted.shifted_probabilities
    )
    rule = SHIFTED_THRESHOLD_RULE if measured.shifted is not None else THRESHOLD_RULE
    return TrainResult(
        model=model,
        classes=built.classes,
        positive_class=built.positive_class,
        threshold=measured.threshold,
        threshold_rule=rule.format(target=config.min_sensitivity, positive=built.positive_class),
        evaluation=measured.evaluation,
        history=fitted.history,
        base_weights_sha256=built.base_sha,
        config=config,
        counts=splits.counts(),
        timings=timings,
        skipped_files=[(str(path), reason) for path, reason in splits.failed],
        extraction=extraction,
        probabilities=fitted.probabilities,
        true_idx=true_idx,
        shifted=measured.shifted,
        shifted_probabilities=fitted.shifted_probabilities,
        shifted_true_idx=splits.shifted.truth if splits.shifted is not None else None,
        shifted_names=splits.shifted.names if splits.shifted is not None else None,
        calibration=calibration,
        thresholds=measured.thresholds,
        duplicates=duplicates,
    )


def _unit_norm_scale(features: FloatArray, pooling: str) -> float:
    """The factor that makes the pooled feature vector unit-length on average.

    A linear head on 25,088 unnormalised VGG16 features moves its logits by tens per
    Adam step and saturates its softmax within an epoch (probabilities of exactly 1.0,
    a threshold that cannot be placed, and a different model for every seed). On
    unit-norm inputs a step moves a logit by about the learning rate, and the L2 penalty
    means the same for every backbone and pooling.
    """
    total = 0.0
    for start in range(0, len(features), 256):
        chunk = np.asarray(features[start : start + 256], dtype=np.float64)
        pooled = chunk.reshape(len(chunk), -1) if pooling == "flatten" else chunk.mean(axis=(1, 2))
        total += float(np.sum(np.square(pooled)))
    mean_square_norm = total / max(len(features), 1)
    return 1.0 / float(np.sqrt(mean_square_norm)) if mean_square_norm > 0 else 1.0


def _check_usable(train: LabelledSplit, evaluation: LabelledSplit, positive_class: str) -> None:
    empty = [name for name, count in train.counts().items() if count == 0]
    if empty:
        raise DataError(f"no decodable training images left for classes {empty}")
    counts = evaluation.counts()
    if counts.get(positive_class, 0) == 0 or sum(counts.values()) == counts[positive_class]:
        raise DataError(
            f"the evaluation folder {evaluation.root} needs decodable images of "
            f"{positive_class} and of the other classes to measure AUC, sensitivity and "
            f"specificity (it has {counts})"
        )


def _check_consistent(
    model: keras.Model,
    images: tuple[LabelledImage, ...],
    expected: FloatArray,
    model_input: ModelInput,
) -> None:
    """The saved model on raw pixels must agree with the feature path used for metrics."""
    if not images:
        return
    prepared = prepare_images(images, model_input)
    if len(prepared.images) != len(images):
        raise RuntimeError(f"evaluation images stopped decoding during the run: {prepared.failed}")
    got = np.asarray(model.predict_on_batch(prepared.pixels.astype(np.float32)))
    if not np.allclose(got, expected, atol=1e-3):
        raise RuntimeError(
            "the assembled model disagrees with the cached-feature path "
            f"(max difference {float(np.max(np.abs(got - expected))):.4g}); "
            "the feature cache is stale or the preprocessing differs"
        )


def _decode_split(
    split: LabelledSplit, model_input: ModelInput
) -> tuple[LabelledSplit, npt.NDArray[np.uint8], list[tuple[Path, str]]]:
    prepared = prepare_images(split.images, model_input)
    failed = list(prepared.failed)
    return split.without(path for path, _ in failed), prepared.pixels, failed
