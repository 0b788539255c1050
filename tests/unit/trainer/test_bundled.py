"""The bundled default model: exported from a trained version, put in service on a first
start, refused on base weights that are not the ones its head was trained on."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import keras
import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import model_registry
from db.migrate import upgrade
from db.models import ModelStatus
from db.session import make_engine, make_session_factory, session_scope
from tests.tiny_model import register_model
from tests.unit.trainer.conftest import make_dataset, tiny_train_config
from trainer.artifacts import save_trained
from trainer.backbones import weights_sha256
from trainer.bundled import (
    HEAD_FILE,
    REGISTRY_NOTES,
    Bundle,
    check_input,
    export_bundle,
    install_bundled,
    read_bundle,
)
from trainer.data import load_dataset
from trainer.errors import RegistryError
from trainer.train import train_model
from worker.imaging import DecodeOptions
from worker.pipeline import file_sha256, load_verified
from worker.settings import Settings

TRAINED_VERSION = "20260101-000000-vgg16"


@dataclass(frozen=True, slots=True)
class Made:
    """A trained tiny version, the base weights file it was trained on, and its bundle."""

    version_dir: Path
    weights: Path
    bundle_dir: Path
    bundle: Bundle


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """A real (tiny) training run saved as the trainer saves it, then exported.

    Its base has random weights; saved to a ``.weights.h5`` file they play the part of
    the ImageNet weights a site supplies, and hash as the card says.
    """
    root = tmp_path_factory.mktemp("bundled")
    data = make_dataset(root / "data")
    result = train_model(
        load_dataset(data),
        tiny_train_config(epochs=3),
        cache_root=root / "cache",
        decode=DecodeOptions(),
    )
    saved = save_trained(
        result,
        model_dir=root / "trained",
        version=TRAINED_VERSION,
        data_fingerprint="f" * 64,
        data_root=data,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    weights = root / "vgg16_notop.weights.h5"
    result.model.get_layer("base").save_weights(weights)
    bundle_dir = root / "bundle"
    export_bundle(saved.directory, bundle_dir, command="pytest tiny run", today=date(2026, 1, 2))
    return Made(saved.directory, weights, bundle_dir, read_bundle(bundle_dir))


def _settings(
    tmp_path: Path, made: Made, *, weights: str | None = None, **extra: object
) -> Settings:
    return Settings(
        model_dir=tmp_path / "models",
        base_weights=weights or str(made.weights),
        bundled_model_dir=extra.pop("bundled_model_dir", made.bundle_dir),
        **extra,
    )


def _status(factory: sessionmaker[Session], version: str) -> ModelStatus:
    with session_scope(factory) as session:
        return model_registry.require_model(session, version=version).status


def test_export_writes_head_card_and_report(made: Made) -> None:
    card = made.bundle.card
    assert {p.name for p in made.bundle_dir.iterdir()} == {
        HEAD_FILE,
        "model_card.json",
        "report.png",
    }
    head_sha = file_sha256(made.bundle_dir / HEAD_FILE)
    assert card["bundle"]["version"] == f"bundled-20260102-{head_sha[:8]}"
    assert card["bundle"]["head_sha256"] == head_sha
    assert card["bundle"]["trained_by"] == "pytest tiny run"
    assert "doi:10.17632/rscbjbr9sj.2, CC BY 4.0" in card["bundle"]["data"]
    assert "Not for clinical use" in card["bundle"]["not_for_clinical_use"]
    assert card["version"] == TRAINED_VERSION  # the card of the version it came from
    head = keras.models.load_model(made.bundle_dir / HEAD_FILE, compile=False)
    assert head.name == "head"
    assert tuple(head.input_shape[1:]) == (1, 1, 512)  # VGG16's feature map at 32 px


def test_installs_and_activates_the_bundle_when_no_model_is_active(
    made: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    outcome = install_bundled(_settings(tmp_path, made), session_factory)

    version = made.bundle.version
    assert outcome.installed
    assert outcome.version == version
    assert outcome.message.startswith(
        f"No model is active: putting the bundled default model {version}"
    )
    with session_scope(session_factory) as session:
        row = model_registry.get_active_model(session)
        assert row is not None
        assert row.version == version
        assert row.notes is not None
        assert row.notes.startswith(REGISTRY_NOTES)
        assert row.base_weights_sha256 == made.bundle.base_sha256
        assert row.input_size == 32
        assert row.classes == ["NORMAL", "PNEUMONIA"]
        assert row.metrics["auc"] == made.bundle.card["evaluation"]["auc"]
        artifact, checksum = Path(row.artifact_path), row.checksum
    folder = tmp_path / "models" / version
    assert artifact == (folder / "model.keras").resolve()
    card = json.loads((folder / "model_card.json").read_text())
    assert card["version"] == version
    assert card["artifact"]["sha256"] == checksum
    assert (folder / "report.png").read_bytes() == (made.bundle_dir / "report.png").read_bytes()
    # What a worker loads answers as the trained model did.
    served = load_verified(artifact, checksum=checksum, name=version)
    trained = keras.models.load_model(made.version_dir / "model.keras", compile=False)
    np.testing.assert_allclose(
        served.predict(check_input(32), verbose=0),
        trained.predict(check_input(32), verbose=0),
        atol=1e-5,
    )
    assert weights_sha256(served.get_layer("base")) == made.bundle.base_sha256


def test_does_nothing_when_a_model_is_active(
    made: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")

    outcome = install_bundled(_settings(tmp_path, made), session_factory)

    assert not outcome.installed
    assert outcome.version == "tiny-1"
    assert "only when no model is" in outcome.message
    assert not (tmp_path / "models" / made.bundle.version).exists()
    with session_scope(session_factory) as session:
        assert model_registry.get_model(session, version=made.bundle.version) is None


def test_reactivates_a_bundled_version_registered_before(
    made: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    version = made.bundle.version
    assert install_bundled(_settings(tmp_path, made), session_factory).installed
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")
    with session_scope(session_factory) as session:
        model_registry.set_active(session, version="tiny-1")
        model_registry.reject(session, version="tiny-1", reason="a bad night")
    artifact = tmp_path / "models" / version / "model.keras"
    written = artifact.stat().st_mtime_ns

    # No weights needed: nothing is built again.
    outcome = install_bundled(_settings(tmp_path, made, weights="none"), session_factory)

    assert outcome.installed, outcome.message
    assert outcome.version == version
    assert _status(session_factory, version) is ModelStatus.ACTIVE
    assert artifact.stat().st_mtime_ns == written


def test_reuses_the_folder_of_an_earlier_install_after_the_registry_was_reset(
    made: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    assert install_bundled(_settings(tmp_path, made), session_factory).installed
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(engine)
    try:
        fresh = make_session_factory(engine)
        outcome = install_bundled(_settings(tmp_path, made, weights="none"), fresh)
        assert outcome.installed, outcome.message
        assert _status(fresh, made.bundle.version) is ModelStatus.ACTIVE
    finally:
        engine.dispose()


def test_never_overwrites_a_version_folder_with_other_content(
    made: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    folder = tmp_path / "models" / made.bundle.version
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("someone's work")

    outcome = install_bundled(_settings(tmp_path, made), session_factory)

    assert not outcome.installed
    assert str(folder) in outcome.message
    assert "never overwritten" in outcome.message
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_refuses_base_weights_other_than_the_ones_the_head_was_trained_on(
    made: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    keras.utils.set_random_seed(123)
    other = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    other_file = tmp_path / "other.weights.h5"
    other.save_weights(other_file)
    # The hash as the installer computes it: of a base named as the trainer names it.
    rebuilt = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(32, 32, 3), name="base"
    )
    rebuilt.load_weights(other_file)

    outcome = install_bundled(_settings(tmp_path, made, weights=str(other_file)), session_factory)

    assert not outcome.installed
    assert outcome.version is None
    assert weights_sha256(rebuilt) in outcome.message
    assert made.bundle.base_sha256 in outcome.message
    assert str(other_file) in outcome.message
    assert not (tmp_path / "models" / made.bundle.version).exists()
    with session_scope(session_factory) as session:
        assert model_registry.get_active_model(session) is None


def _junk_weights(tmp_path: Path) -> str:
    path = tmp_path / "junk.weights.h5"
    path.write_bytes(b"not an HDF5 file" * 64)
    return str(path)


@pytest.mark.parametrize(
    ("weights", "why"),
    [
        pytest.param(lambda _: "none", "CXR_BASE_WEIGHTS is 'none'", id="none"),
        pytest.param(_junk_weights, "junk.weights.h5 does not load", id="not-vgg16-weights"),
        pytest.param(
            lambda _: "imagenet", "Keras's download failed: URL fetch failure", id="offline"
        ),
    ],
)
def test_missing_base_weights_are_one_line_that_says_what_to_set(
    made: Made,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    weights: object,
    why: str,
) -> None:
    def offline(*_args: object, **_kwargs: object) -> str:
        # What keras.utils.get_file raises without a network.
        raise Exception(  # Keras raises a bare Exception here too
            "URL fetch failure on https://storage.googleapis.com/...: None -- "
            "[Errno -2] Name or service not known"
        )

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    setting = weights(tmp_path)  # type: ignore[operator]

    outcome = install_bundled(_settings(tmp_path, made, weights=setting), session_factory)

    assert not outcome.installed
    assert "\n" not in outcome.message
    assert outcome.message.startswith(
        "no model in service: the bundled model needs the VGG16 ImageNet base weights; "
        "set CXR_BASE_WEIGHTS to a vgg16 'notop' .weights.h5 file ("
    )
    assert why in outcome.message
    with session_scope(session_factory) as session:
        assert model_registry.get_active_model(session) is None


def test_an_absent_bundle_is_reported_not_raised(
    made: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = _settings(tmp_path, made, bundled_model_dir=tmp_path / "no-bundle")

    outcome = install_bundled(settings, session_factory)

    assert not outcome.installed
    assert outcome.version is None
    assert re.search(r"no-bundle/head\.keras is absent", outcome.message)
    assert "CXR_DATA_DIR" in outcome.message


def test_a_damaged_head_is_refused(made: Made, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(made.bundle_dir, damaged)
    with (damaged / HEAD_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(
        RegistryError, match=r"head\.keras has sha256 [0-9a-f]{64}, the bundle's card"
    ):
        read_bundle(damaged)


def test_export_refuses_a_model_whose_base_was_trained(made: Made, tmp_path: Path) -> None:
    changed = tmp_path / "fine-tuned"
    shutil.copytree(made.version_dir, changed)
    model = keras.models.load_model(changed / "model.keras", compile=False)
    conv = model.get_layer("base").get_layer("block5_conv3")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * 1.01, bias])
    model.save(changed / "model.keras")
    card = json.loads((changed / "model_card.json").read_text())
    card["artifact"]["sha256"] = file_sha256(changed / "model.keras")
    (changed / "model_card.json").write_text(json.dumps(card))

    with pytest.raises(RegistryError, match="a fine-tuned model cannot be bundled as a head alone"):
        export_bundle(changed, tmp_path / "out", command="x")
    assert not (tmp_path / "out" / HEAD_FILE).exists()
