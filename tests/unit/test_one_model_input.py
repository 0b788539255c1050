"""Training, evaluation, the feature-cache key and serving see the same model input.

For every backbone in the table, at its own input size: the worker's rule
(`LoadedModel.model_input`, used by the screening batch and `cxr-screen screen`), the
trainer's (`training_input`, used by feature extraction and online training), the
evaluator's (`evaluation_input`) and the feature-cache key must agree, and the files
decode to identical pixels through each of them. Full-resolution JPEGs are where they
drifted apart (the reduced-size JPEG decode), so they are among the files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from trainer.data import LabelledImage, prepare_images
from trainer.evaluate import evaluation_input
from trainer.train import TrainConfig, feature_cache, training_input
from worker.imaging import DecodeOptions
from worker.inference import LoadedModel
from worker.pipeline import (
    ModelInput,
    OperatingPoint,
    Predictor,
    Prepared,
    file_sha256,
    prepare_file,
)
from worker.pipeline.backbones import BACKBONES

OPTIONS = DecodeOptions(pseudonym_key=b"k" * 32)


@pytest.fixture(scope="module")
def files(shared_data: Path) -> list[LabelledImage]:
    """Two full-resolution JPEGs (drafted), a training-size JPEG and two real DICOMs."""
    full = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:2]
    small = sorted((shared_data / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:1]
    dicom = [
        shared_data / "dicom" / "cr_chest_sc_jpeg_baseline.dcm",
        shared_data / "dicom" / "dx_chest_pa_mono1_inverse_plut_j2k.dcm",
    ]
    paths = [*full, *small, *dicom]
    assert len(paths) == 5
    return [LabelledImage(p, "NORMAL", file_sha256(p)) for p in paths]


def _serving(size: int) -> ModelInput:
    stand_in = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Flatten()])
    loaded = LoadedModel(
        version_id=1,
        version="v",
        input_size=size,
        predictor=Predictor(stand_in),
        point=OperatingPoint(("NORMAL", "PNEUMONIA"), "PNEUMONIA", 0.5),
    )
    return loaded.model_input(OPTIONS)


def _pixels(model_input: ModelInput, files: list[LabelledImage]) -> np.ndarray:
    outcomes = [prepare_file(f.path, model_input) for f in files]
    assert all(isinstance(o, Prepared) for o in outcomes), outcomes
    return np.stack([o.image for o in outcomes if isinstance(o, Prepared)])


def _callers(backbone: str) -> tuple[ModelInput, ModelInput, ModelInput]:
    """What serving, training and evaluation derive for a model on `backbone`."""
    size = BACKBONES[backbone].default_size
    model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Flatten()])
    return (
        _serving(size),
        training_input(TrainConfig(backbone=backbone), OPTIONS),
        evaluation_input(model, OPTIONS),
    )


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_caller_derives_the_same_input(backbone: str) -> None:
    serving, training, evaluation = _callers(backbone)
    cache = feature_cache(
        Path("/unused"), backbone=backbone, base_sha="0" * 64, model_input=training, layer="x"
    )
    assert serving == training == evaluation
    assert cache.key.input_size == serving.size == BACKBONES[backbone].default_size
    assert cache.key.decoder == serving.cache_tag


# One backbone per input side: equal inputs (above) decode alike, so each side once.
SIDES = {spec.default_size: name for name, spec in sorted(BACKBONES.items())}


@pytest.mark.parametrize("backbone", sorted(SIDES.values()))
def test_every_caller_sees_the_same_pixels(backbone: str, files: list[LabelledImage]) -> None:
    serving, training, evaluation = _callers(backbone)
    served = _pixels(serving, files)
    trained = prepare_images(files, training)
    assert trained.failed == ()
    evaluated = prepare_images(files, evaluation)
    assert served.shape == (len(files), serving.size, serving.size, 3)
    assert np.array_equal(served, trained.pixels)
    assert np.array_equal(served, evaluated.pixels)


def test_the_draft_rule_matters_so_the_test_above_can_fail(files: list[LabelledImage]) -> None:
    """Training once drafted at max(448, size), serving at twice the size: for the
    299-pixel backbones that is another model input for the same full-resolution JPEG."""
    serving = _serving(299)
    old_training = dataclasses.replace(
        serving, options=dataclasses.replace(serving.options, draft_size=448)
    )
    full = files[:2]
    assert not np.array_equal(_pixels(serving, full), _pixels(old_training, full))
    assert serving.cache_tag != old_training.cache_tag
