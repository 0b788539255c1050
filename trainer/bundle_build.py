"""Building the bundled default model: the default recipe on labelled folders, exported as a
bundle (`trainer.bundled`).

One command reproduces the packaged bundle (with CXR_BASE_WEIGHTS pointing at the VGG16
ImageNet "notop" weights):

    cxr-screen models build-bundled ../shared/data/chest_xray

It trains exactly what `cxr-screen train` trains with the default settings (the same
`train_model`, the same feature cache), saves the version with its card and report like
any other, and exports its head, card and report into the bundle folder.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from db.types import utcnow
from trainer.artifacts import new_version, save_trained
from trainer.bundled import BUNDLE_DIR, export_bundle
from trainer.data import LabelledDataset, load_dataset, prepare_images
from trainer.train import Progress, TrainConfig, train_model, training_input
from worker.imaging import DecodeOptions

logger = logging.getLogger(__name__)

BUILD_COMMAND = "cxr-screen models build-bundled {data_dir}"
# Evaluation films the float16 copy of a fine-tuned block is compared on (a minute of
# VGG16 on 2 CPU cores, twice).
COMPARISON_IMAGES = 64


@dataclass(frozen=True, slots=True)
class BuiltBundle:
    """Where the bundle was written, the trained version it came from, and its card."""

    directory: Path
    trained_version: Path
    card: dict[str, Any]


def build_bundle(
    data_dir: Path,
    *,
    config: TrainConfig,
    cache_root: Path,
    decode: DecodeOptions,
    out_dir: Path = BUNDLE_DIR,
    work_dir: Path | None = None,
    progress: Progress | None = None,
) -> BuiltBundle:
    """Train `config` on ``data_dir`` (train/ and val/), save the version under `work_dir`
    (a new temporary folder when None) and export it as the bundle in `out_dir`."""
    dataset = load_dataset(data_dir)
    result = train_model(dataset, config, cache_root=cache_root, decode=decode, progress=progress)
    model_dir = work_dir or Path(tempfile.mkdtemp(prefix="cxr-bundle-"))
    now = utcnow()
    saved = save_trained(
        result,
        model_dir=model_dir,
        version=new_version(config.backbone, now=now),
        data_fingerprint=dataset.fingerprint(),
        data_root=data_dir,
        created_at=now,
    )
    card = export_bundle(
        saved.directory,
        out_dir,
        command=BUILD_COMMAND.format(data_dir=data_dir.name),
        compare_on=comparison_images(dataset, config, decode),
    )
    return BuiltBundle(out_dir, saved.directory, card)


def comparison_images(
    dataset: LabelledDataset, config: TrainConfig, decode: DecodeOptions
) -> npt.NDArray[np.uint8]:
    """Up to `COMPARISON_IMAGES` evaluation films, spread over the folder, as model input:
    where a float16 copy of a fine-tuned block must answer as the trained one does."""
    images = dataset.evaluation.images
    step = max(1, len(images) // COMPARISON_IMAGES)
    prepared = prepare_images(images[::step][:COMPARISON_IMAGES], training_input(config, decode))
    return prepared.pixels
