"""Tiny synthetic labelled folders and a tiny, fast training configuration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.model import HeadConfig
from trainer.train import TrainConfig
from worker.imaging import DecodeOptions

TINY = 32


def write_image(path: Path, label: str, seed: int) -> Path:
    """A 40x40 grey PNG: dark for NORMAL, bright with a blob for PNEUMONIA.

    Separable by brightness, so even a randomly initialised base yields features a
    linear head can learn; the seed makes every file's content unique.
    """
    rng = np.random.default_rng(int(hashlib.sha256(f"{label}{seed}".encode()).hexdigest()[:8], 16))
    base = 70.0 if label == "NORMAL" else 170.0
    pixels = rng.normal(base, 20.0, size=(40, 40))
    if label != "NORMAL":
        y, x = np.ogrid[:40, :40]
        cy, cx = rng.integers(10, 30, size=2)
        pixels[(y - cy) ** 2 + (x - cx) ** 2 < 40] = 240.0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(path)
    return path


def make_dataset(
    root: Path, *, train: int = 10, val: int = 6, classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
) -> Path:
    """``root/train/<CLASS>/*.png`` and ``root/val/<CLASS>/*.png``."""
    for split, count, offset in (("train", train, 0), ("val", val, 1000)):
        for label in classes:
            for i in range(count):
                write_image(root / split / label / f"{label.lower()}_{i}.png", label, offset + i)
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A small, separable labelled dataset."""
    return make_dataset(tmp_path / "data")


def tiny_train_config(*, epochs: int = 8) -> TrainConfig:
    """VGG16 at 32x32 with random weights, the head alone: seconds on a CPU.

    The default recipe also fine-tunes the last block; tests of that stage ask for it
    (`fine_tune=True`), the others keep the base as built so they can check it.
    """
    return TrainConfig(
        backbone="vgg16",
        input_size=TINY,
        base_weights=None,
        epochs=epochs,
        batch_size=8,
        learning_rate=1e-2,
        head=HeadConfig(dropout=0.2, l2=1e-4),
        augment_views=0,
        site_views=0,
        fine_tune=False,
        min_sensitivity=0.95,
        seed=7,
    )


@pytest.fixture
def tiny_config() -> TrainConfig:
    """The tiny configuration of `tiny_train_config`."""
    return tiny_train_config()


@pytest.fixture
def decode() -> DecodeOptions:
    """Default decoder options (no key file written under var/)."""
    return DecodeOptions()
