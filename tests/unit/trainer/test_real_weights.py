"""Slow: the real ImageNet VGG16 base on a small real subset of the Kermany chest X-rays."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trainer.data import load_dataset
from trainer.train import TrainConfig, train_model
from worker.imaging import DecodeOptions

pytestmark = pytest.mark.slow


def _subset(source: Path, target: Path, per_class: dict[str, int]) -> None:
    for split, count in per_class.items():
        for label in ("NORMAL", "PNEUMONIA"):
            files = sorted((source / split / label).iterdir())
            step = max(1, len(files) // count)
            for path in files[::step][:count]:
                destination = target / split / label / path.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)


def test_real_vgg16_separates_normal_from_pneumonia(
    shared_data: Path, vgg16_weights: Path, tmp_path: Path
) -> None:
    chest = shared_data / "chest_xray"
    if not chest.is_dir():
        pytest.skip(f"{chest} is absent")
    _subset(chest, tmp_path / "data", {"train": 40, "val": 20})
    config = TrainConfig(base_weights=vgg16_weights, epochs=5, batch_size=32)
    result = train_model(
        load_dataset(tmp_path / "data"),
        config,
        cache_root=tmp_path / "cache",
        decode=DecodeOptions(),
    )
    assert result.counts == {
        "train": {"NORMAL": 40, "PNEUMONIA": 40},
        "evaluation": {"NORMAL": 20, "PNEUMONIA": 20},
    }
    assert result.evaluation.auc is not None
    # 80 training images on frozen ImageNet features already rank these 40 at about 0.997.
    assert result.evaluation.auc >= 0.95, result.evaluation.to_dict()
    assert result.evaluation.sensitivity is not None
    assert result.evaluation.sensitivity >= 0.95
