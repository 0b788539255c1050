"""Disk cache of frozen-base features per image, so retraining only runs the base on new files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt

from trainer.data import LabelledImage, prepare_images
from trainer.preprocessing import PREPROCESSING_VERSION
from worker.pipeline import ModelInput

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
ProgressCallback = Callable[[int, int], None]
# Changes one image's model input (uint8, side x side x 3) before the batch transform.
PixelTransform = Callable[[npt.NDArray[np.uint8], LabelledImage], npt.NDArray[np.uint8]]


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Everything that decides what the base computes for an image's bytes.

    Two runs share cached features only if all of these match: the image content is the
    per-file part of the key, and this is the per-cache part.

    Attributes:
        backbone: The backbone's name.
        base_weights_sha256: Hash of the base's weight tensors (`weights_sha256`).
        input_size: The model's input side.
        layer: Which tensor is cached (``base_output`` or the fine-tuning cut).
        preprocessing_version: `trainer.preprocessing.PREPROCESSING_VERSION`.
        decoder: How files were decoded (decoder options that change pixels).
        view: ``original``, or ``augmented-<n>`` for the n-th stored augmentation.
    """

    backbone: str
    base_weights_sha256: str
    input_size: int
    layer: str
    preprocessing_version: int
    decoder: str
    view: str = "original"

    def digest(self) -> str:
        """A short, stable name for the cache folder."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


class FeatureCache:
    """Features of one `CacheKey`: one ``.npy`` file per image content hash."""

    def __init__(self, root: Path, key: CacheKey) -> None:
        self.key = key
        self.directory = root / key.digest()

    def path(self, sha256: str) -> Path:
        """Where the features of the image with this content hash live."""
        return self.directory / sha256[:2] / f"{sha256}.npy"

    def has(self, sha256: str) -> bool:
        """Whether features for this content are stored."""
        return self.path(sha256).is_file()

    def load(self, sha256: str) -> FloatArray:
        """The stored features for this content."""
        return np.asarray(np.load(self.path(sha256), allow_pickle=False), dtype=np.float32)

    def store(self, sha256: str, features: FloatArray) -> None:
        """Write atomically: a crashed or concurrent run never leaves half a file."""
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "key.json"
        if not key_file.exists():
            key_file.write_text(json.dumps(asdict(self.key), indent=2, sort_keys=True))
        handle, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.save(out, np.asarray(features, dtype=np.float32), allow_pickle=False)
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass(slots=True)
class Extraction:
    """What one pass over a list of images did."""

    extracted: int = 0
    cached: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def extract_missing(
    images: Sequence[LabelledImage],
    *,
    cache: FeatureCache,
    extractor: keras.Model,
    model_input: ModelInput,
    batch_size: int = 32,
    transform: keras.Layer | None = None,
    pixel_transform: PixelTransform | None = None,
    progress: ProgressCallback | None = None,
) -> Extraction:
    """Run the base on the images whose features are not cached yet, and store them.

    Files that do not decode are skipped and reported (not fatal): one broken file in
    a folder of thousands must not stop the nightly run.

    Args:
        images: The images to cover.
        cache: Where features are stored.
        extractor: image (RGB 0..255) -> features.
        model_input: How files become the extractor's input (the serving pipeline's).
        batch_size: Images per forward pass.
        transform: An augmentation applied (in training mode) before the extractor, for
            stored augmented views.
        pixel_transform: A per-image change applied before `transform` (the site
            changes of `trainer.site_shift.random_site_change`).
        progress: Called with (images done, total) after each batch.
    """
    result = Extraction()
    todo: list[LabelledImage] = []
    for image in images:
        if cache.has(image.sha256):
            result.cached += 1
        else:
            todo.append(image)
    total = len(images)
    done = result.cached
    if progress is not None:
        progress(done, total)
    if todo:
        logger.info(
            "extracting %s features of %d images (%d cached) into %s",
            cache.key.view,
            len(todo),
            result.cached,
            cache.directory,
        )
    for start in range(0, len(todo), batch_size):
        prepared = prepare_images(todo[start : start + batch_size], model_input)
        result.failed.extend(prepared.failed)
        if prepared.images:
            pixels = prepared.pixels
            if pixel_transform is not None:
                pixels = np.stack(
                    [
                        pixel_transform(row, image)
                        for row, image in zip(pixels, prepared.images, strict=True)
                    ]
                )
            x = pixels.astype(np.float32)
            if transform is not None:
                x = keras.ops.convert_to_numpy(transform(x, training=True))
            features = np.asarray(extractor.predict_on_batch(x), dtype=np.float32)
            for image, row in zip(prepared.images, features, strict=True):
                cache.store(image.sha256, row)
            result.extracted += len(prepared.images)
        done += len(todo[start : start + batch_size])
        if progress is not None:
            progress(done, total)
    return result


def load_features(images: Sequence[LabelledImage], *, cache: FeatureCache) -> FloatArray:
    """The cached features of `images`, stacked in order (all must be cached)."""
    return load_views(images, caches=[cache])


def load_views(images: Sequence[LabelledImage], *, caches: Sequence[FeatureCache]) -> FloatArray:
    """The cached features of `images` in each cache (view) in turn, stacked into one
    array allocated once: a fine-tuning run's two views of 4,700 films are 3.8 GB, and
    stacking per-view arrays would hold them twice."""
    if not images or not caches:
        raise ValueError("no images to load features for")
    first = caches[0].load(images[0].sha256)
    out = np.empty((len(caches) * len(images), *first.shape), dtype=np.float32)
    for v, cache in enumerate(caches):
        offset = v * len(images)
        for i, image in enumerate(images):
            out[offset + i] = first if v == 0 and i == 0 else cache.load(image.sha256)
    return out


def feature_cache(
    cache_root: Path,
    *,
    backbone: str,
    base_sha: str,
    model_input: ModelInput,
    layer: str,
    view: str = "original",
) -> FeatureCache:
    """The cache for one backbone, weights, model input, cached layer and view."""
    key = CacheKey(
        backbone=backbone,
        base_weights_sha256=base_sha,
        input_size=model_input.size,
        layer=layer,
        preprocessing_version=PREPROCESSING_VERSION,
        decoder=model_input.cache_tag,
        view=view,
    )
    return FeatureCache(cache_root, key)
