"""A training run end to end on the database: register, gate, skip unchanged, lock, roll back."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.locks import acquire_lock
from db.models import ModelStatus, ModelVersion, RunStatus, TrainingRun
from db.session import make_session_factory, session_scope
from tests.unit.trainer.conftest import make_dataset, tiny_train_config, write_image
from trainer import nightly
from trainer.data import load_dataset
from trainer.errors import DataError, RegistryError
from trainer.promotion import promote, rollback
from trainer.site_shift import SHIFTS
from worker.imaging import DecodeOptions
from worker.pipeline import load_verified
from worker.settings import Settings, load_settings

CONFIG = tiny_train_config(epochs=6)


@pytest.fixture
def factory(migrated_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(migrated_engine)


@pytest.fixture
def settings(database_url: str, migrated_engine: Engine, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=database_url,
        model_dir=tmp_path / "models",
        data_dir=make_dataset(tmp_path / "data", train=8, val=6),
        base_weights="none",
    )


def _run(settings: Settings, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("config", CONFIG)
    return nightly.run_training(settings, decode=DecodeOptions(), **kwargs)


def _runs(factory: sessionmaker[Session]) -> list[TrainingRun]:
    with session_scope(factory) as session:
        return list(reversed(model_registry.list_runs(session)))


def test_first_run_registers_an_active_model_with_its_artifacts(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    outcome = _run(settings, trigger="nightly")
    assert outcome["status"] == "succeeded"
    assert outcome["promoted"] is True
    json.dumps(outcome)  # a Celery JSON result
    with session_scope(factory) as session:
        active = model_registry.get_active_model(session)
        assert active is not None
        assert active.version == outcome["version"]
        assert active.classes == ["NORMAL", "PNEUMONIA"]
        assert (active.positive_class, active.input_size, active.backbone) == (
            "PNEUMONIA",
            32,
            "vgg16",
        )
        assert active.metrics["auc"] >= 0.9
        assert active.threshold == outcome["evaluation"]["threshold"]
        assert active.data_fingerprint == outcome["data_fingerprint"]
        assert active.base_weights_sha256
        artifact, checksum = Path(active.artifact_path), active.checksum
        active_base = active.base_weights_sha256
    folder = artifact.parent
    assert folder.parent == settings.storage.model_dir
    assert {p.name for p in folder.iterdir()} == {"model.keras", "model_card.json", "report.png"}
    card = json.loads((folder / "model_card.json").read_text())
    assert card["artifact"]["sha256"] == checksum
    assert card["model"]["threshold_rule"].startswith("the highest threshold")
    assert card["data"]["counts"]["train"] == {"NORMAL": 8, "PNEUMONIA": 8}
    # What the card promises off val: the shifted copy, where the threshold was chosen,
    # the calibration and how duplicates were handled.
    shifted = card["shifted_evaluation"]
    assert shifted["n"] == 12 * 8
    assert set(shifted["shifts"]) == set(SHIFTS)
    assert shifted["held_out"]["n"] == 12 * 3
    assert shifted["sensitivity"] >= 0.95
    chosen_on = card["model"]["threshold_chosen_on"]
    assert chosen_on["chosen"] == min(chosen_on["evaluation"], chosen_on["shifted"])
    assert card["model"]["threshold"] == chosen_on["chosen"]
    assert "shifted copy" in card["model"]["threshold_rule"]
    calibration = card["calibration"]
    assert calibration["temperature"] > 0
    assert set(calibration["before"]) == set(calibration["after"]) == {"evaluation", "shifted"}
    assert len(calibration["after"]["evaluation"]["bins"]) == 10
    assert card["data"]["exact_duplicates"]["train_duplicates"] == 0
    assert card["base_weights"]["tensors_sha256"] == active_base
    with Image.open(folder / "report.png") as report:
        # ROC, confusion matrix, reliability curves and training curves side by side.
        assert report.width > 3.5 * report.height
    assert outcome["gate"]["shifted"]["passed"] is True
    load_verified(artifact, checksum=checksum, name=outcome["version"])
    [run] = _runs(factory)
    assert run.status is RunStatus.SUCCEEDED
    assert run.trigger == "nightly"
    assert run.duration_s is not None
    assert run.model_version_id is not None
    assert run.metrics["evaluation"]["auc"] >= 0.9
    assert "registered as active" in run.log


def test_unchanged_data_is_skipped_without_training_and_new_images_retrain(
    settings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(settings)

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged dataset was retrained")

    monkeypatch.setattr(nightly, "train_model", must_not_train)
    outcome = _run(settings, trigger="nightly")
    assert outcome["status"] == "skipped"
    assert "data unchanged" in outcome["reason"]
    assert [r.status for r in _runs(factory)] == [RunStatus.SUCCEEDED, RunStatus.SKIPPED]
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1

    monkeypatch.undo()
    assert settings.training.data_dir is not None
    write_image(settings.training.data_dir / "train/NORMAL/new.png", "NORMAL", 777)
    outcome = _run(settings, trigger="nightly")
    assert outcome["status"] == "succeeded"
    assert outcome["features"] == {
        "extracted": 1,
        "cached": 28,
        "shifted_extracted": 0,
        "shifted_cached": 12 * 8,
    }


def test_a_worse_model_is_registered_but_not_promoted(
    settings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    first = _run(settings)
    assert settings.training.data_dir is not None
    # The same evaluation folder, but training labels swapped: a model that is worse.
    swapped = tmp_path / "swapped"
    shutil.copytree(settings.training.data_dir / "val", swapped / "val")
    shutil.copytree(settings.training.data_dir / "train/NORMAL", swapped / "train/PNEUMONIA")
    shutil.copytree(settings.training.data_dir / "train/PNEUMONIA", swapped / "train/NORMAL")
    outcome = _run(settings.model_copy(update={"data_dir": swapped}))
    assert outcome["status"] == "succeeded"
    assert outcome["promoted"] is False
    assert not outcome["gate"]["passed"]
    # The active model was measured on the shifted copy too, at its own threshold.
    assert outcome["gate"]["shifted"]["active"]["threshold"] == first["evaluation"]["threshold"]
    with session_scope(factory) as session:
        active = model_registry.get_active_model(session)
        assert active is not None
        assert active.version == first["version"]
        worse = model_registry.get_model(session, version=outcome["version"])
        assert worse is not None
        assert worse.status is ModelStatus.REJECTED
        assert "gate failed" in (worse.notes or "")
    # Promoting it by hand goes through the same gate, unless forced.
    split = load_dataset(swapped).evaluation
    cache = nightly.cache_root(settings)
    with pytest.raises(RegistryError, match=r"was not promoted .*--force"):
        promote(factory, version=outcome["version"], split=split, cache_root=cache,
                decode=DecodeOptions())  # fmt: skip
    promote(factory, version=outcome["version"], split=None, cache_root=cache,
            decode=DecodeOptions(), force=True)  # fmt: skip
    assert rollback(factory) == (outcome["version"], first["version"])
    with session_scope(factory) as session:
        assert model_registry.get_model(session, version=outcome["version"]).status is (  # type: ignore[union-attr]
            ModelStatus.REJECTED
        )
        assert model_registry.get_active_model(session).version == first["version"]  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="only model that was ever active"):
        rollback(factory)


def test_a_held_lock_stops_a_second_run(settings: Settings, factory: sessionmaker[Session]) -> None:
    assert acquire_lock(factory, name="training", holder="other-host:1", ttl=timedelta(hours=1))
    outcome = _run(settings)
    assert outcome["status"] == "busy"
    [run] = _runs(factory)
    assert run.status is RunStatus.SKIPPED
    assert "holds the training lock" in run.log


def test_a_failing_run_is_recorded_and_releases_the_lock(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    assert settings.training.data_dir is not None
    shutil.rmtree(settings.training.data_dir / "val")
    with pytest.raises(DataError, match="no val/ or test/ folder"):
        _run(settings)
    [run] = _runs(factory)
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "no val/ or test/" in run.error
    assert acquire_lock(factory, name="training", holder="next", ttl=timedelta(minutes=1))


def test_no_data_dir_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(DataError, match="CXR_DATA_DIR is not set"):
        _run(settings.model_copy(update={"data_dir": None}))
