"""The bundled default model: exported from a trained version (its head, and its fine-tuned
last block), put in service on a first start, refused on base weights that are not the
ones it was trained on."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
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
from trainer.backbones import get_backbone, weights_sha256
from trainer.bundled import (
    HEAD_FILE,
    REGISTRY_NOTES,
    Bundle,
    check_input,
    export_bundle,
    install_bundled,
    read_bundle,
)
from trainer.bundled_block import (
    FLOAT16_TOLERANCE,
    TUNED_FILE,
    block_weights,
    choose_precision,
    load_block,
    save_block,
)
from trainer.data import load_dataset
from trainer.errors import RegistryError
from trainer.model import last_block_layers
from trainer.train import TrainConfig, train_model
from worker.imaging import DecodeOptions
from worker.pipeline import file_sha256, load_verified
from worker.settings import Settings

TRAINED_VERSION = "20260101-000000-vgg16"


VGG16 = get_backbone("vgg16")


@dataclass(frozen=True, slots=True)
class Made:
    """A trained tiny version, the base weights file it was trained on, and its bundle."""

    version_dir: Path
    weights: Path
    bundle_dir: Path
    bundle: Bundle


def _base_weights_file(root: Path) -> Path:
    """Random VGG16 weights at 32 px in a ``.weights.h5`` file: they play the part of the
    ImageNet weights a site supplies, from training to installation."""
    keras.utils.set_random_seed(99)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = root / "vgg16_notop.weights.h5"
    base.save_weights(path)
    return path


def _train_and_export(root: Path, weights: Path, config: TrainConfig) -> Made:
    """A real (tiny) training run on `weights`, saved as the trainer saves it, exported."""
    data = make_dataset(root / "data")
    result = train_model(
        load_dataset(data),
        replace(config, base_weights=weights),
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
    bundle_dir = root / "bundle"
    export_bundle(saved.directory, bundle_dir, command="pytest tiny run", today=date(2026, 1, 2))
    return Made(saved.directory, weights, bundle_dir, read_bundle(bundle_dir))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """The default recipe (head, then the fine-tuned last block), tiny, exported."""
    root = tmp_path_factory.mktemp("bundled")
    config = replace(tiny_train_config(epochs=3), fine_tune=True, fine_tune_learning_rate=1e-3)
    return _train_and_export(root, _base_weights_file(root), config)


@pytest.fixture(scope="module")
def head_only(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """The head-only recipe (`CXR_FINE_TUNE=false`), tiny, exported."""
    root = tmp_path_factory.mktemp("bundled-head")
    config = replace(tiny_train_config(epochs=3), fine_tune=False)
    return _train_and_export(root, _base_weights_file(root), config)


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


def test_export_writes_head_tuned_block_card_and_report(made: Made) -> None:
    card = made.bundle.card
    assert {p.name for p in made.bundle_dir.iterdir()} == {
        HEAD_FILE,
        TUNED_FILE,
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
    tuned = card["bundle"]["tuned_block"]
    assert tuned["layers"] == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert tuned["parameters"] == 3 * (3 * 3 * 512 * 512 + 512)
    assert tuned["sha256"] == file_sha256(made.bundle_dir / TUNED_FILE)
    assert tuned["precision"]["dtype"] == "float16"
    assert tuned["precision"]["max_abs_difference"] <= FLOAT16_TOLERANCE
    assert tuned["precision"]["verdicts_changed"] == 0
    # The block shipped is the trained one (rounded), not the base it started from.
    trained = keras.models.load_model(made.version_dir / "model.keras", compile=False)
    shipped = load_block(made.bundle_dir / TUNED_FILE)
    for name, values in block_weights(trained.get_layer("base"), VGG16).items():
        assert [v.dtype for v in shipped[name]] == [np.float16, np.float16]
        for got, want in zip(shipped[name], values, strict=True):
            np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-3, atol=1e-4)
    assert weights_sha256(trained.get_layer("base")) != made.bundle.base_sha256


def test_a_head_only_version_exports_no_tuned_block(head_only: Made) -> None:
    assert {p.name for p in head_only.bundle_dir.iterdir()} == {
        HEAD_FILE,
        "model_card.json",
        "report.png",
    }
    assert "tuned_block" not in head_only.bundle.card["bundle"]
    assert head_only.bundle.tuned is None


def test_exporting_a_head_only_version_removes_an_earlier_tuned_block(
    made: Made, head_only: Made, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    shutil.copytree(made.bundle_dir, out)

    export_bundle(head_only.version_dir, out, command="x")

    assert not (out / TUNED_FILE).exists()
    assert read_bundle(out).tuned is None


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
    # What a worker loads answers as the trained model did (its block in float16).
    served = load_verified(artifact, checksum=checksum, name=version)
    trained = keras.models.load_model(made.version_dir / "model.keras", compile=False)
    np.testing.assert_allclose(
        served.predict(check_input(32), verbose=0),
        trained.predict(check_input(32), verbose=0),
        atol=FLOAT16_TOLERANCE,
    )
    np.testing.assert_allclose(
        served.predict(check_input(32), verbose=0)[0],
        made.bundle.card["bundle"]["check"]["probabilities"],
        atol=1e-5,
    )
    # Its lower blocks are the site's weights file, its last block the bundle's.
    site = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    site.load_weights(made.weights)
    served_base = served.get_layer("base")
    tuned = {layer.name for layer in last_block_layers(served_base, VGG16)}
    shipped = load_block(made.bundle_dir / TUNED_FILE)
    for layer in served_base.layers:
        if not layer.weights:
            continue
        want = (
            [v.astype(np.float32) for v in shipped[layer.name]]
            if layer.name in tuned
            else site.get_layer(layer.name).get_weights()
        )
        for got, expected in zip(layer.get_weights(), want, strict=True):
            np.testing.assert_array_equal(got, expected)


def test_installs_a_head_only_bundle_on_the_unchanged_base(
    head_only: Made, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    outcome = install_bundled(_settings(tmp_path, head_only), session_factory)

    assert outcome.installed, outcome.message
    with session_scope(session_factory) as session:
        row = model_registry.require_model(session, version=head_only.bundle.version)
        artifact, checksum = Path(row.artifact_path), row.checksum
    served = load_verified(artifact, checksum=checksum, name=head_only.bundle.version)
    trained = keras.models.load_model(head_only.version_dir / "model.keras", compile=False)
    np.testing.assert_allclose(
        served.predict(check_input(32), verbose=0),
        trained.predict(check_input(32), verbose=0),
        atol=1e-5,
    )
    assert weights_sha256(served.get_layer("base")) == head_only.bundle.base_sha256


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


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(
            lambda path: path.write_bytes(path.read_bytes() + b"\0"),
            r"tuned_block\.npz has sha256 [0-9a-f]{64}, the bundle's card says [0-9a-f]{64}",
            id="changed",
        ),
        pytest.param(
            lambda path: path.unlink(),
            r"tuned_block\.npz is absent, though the bundle's card names a fine-tuned block",
            id="absent",
        ),
    ],
)
def test_a_damaged_tuned_block_is_refused(
    made: Made, tmp_path: Path, damage: object, message: str
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(made.bundle_dir, damaged)
    damage(damaged / TUNED_FILE)  # type: ignore[operator]

    with pytest.raises(RegistryError, match=message):
        read_bundle(damaged)


def test_block_file_round_trips_and_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = {
        "block5_conv1": [rng.normal(size=(3, 3, 4, 4)).astype(np.float16), np.zeros(4)],
        "block5_conv2": [rng.normal(size=(3, 3, 4, 4)).astype(np.float32), np.ones(4)],
    }
    save_block(tmp_path / "a.npz", weights)
    save_block(tmp_path / "b.npz", weights)

    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = load_block(tmp_path / "a.npz")
    assert sorted(loaded) == sorted(weights)
    for name, values in weights.items():
        for got, want in zip(loaded[name], values, strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_float32_is_kept_when_float16_would_change_a_verdict() -> None:
    """The rule, on a scorer whose answer is the sum of the block's weights: rounding
    1 + 2**-12 to float16 drops the 2**-12, which crosses a threshold placed in between."""
    held: dict[str, list[np.ndarray]] = {}

    def score(images: np.ndarray) -> np.ndarray:
        total = float(sum(np.sum(v.astype(np.float64)) for v in held["block"]))
        return np.full(len(images), total - 0.5, dtype=np.float32)

    def set_block(weights: dict[str, list[np.ndarray]]) -> None:
        held.clear()
        held.update(weights)

    images = np.zeros((3, 2, 2, 3), dtype=np.float32)
    precise = {"block": [np.array([1.0 + 2.0**-12], dtype=np.float32)]}
    chosen, precision = choose_precision(score, set_block, precise, images, threshold=0.50012)
    assert precision.dtype == "float32"
    assert precision.verdicts_changed == 3
    assert chosen is precise
    assert held["block"][0].dtype == np.float32  # the model is left with what is stored

    roomy = {"block": [np.array([1.25], dtype=np.float32)]}  # exact in float16
    chosen, precision = choose_precision(score, set_block, roomy, images, threshold=0.5)
    assert precision.dtype == "float16"
    assert precision.max_abs_difference == 0.0
    assert chosen["block"][0].dtype == np.float16


def test_export_refuses_a_head_only_model_whose_base_was_changed(
    head_only: Made, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(head_only.version_dir, changed)
    model = keras.models.load_model(changed / "model.keras", compile=False)
    conv = model.get_layer("base").get_layer("block5_conv3")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * 1.01, bias])
    model.save(changed / "model.keras")
    card = json.loads((changed / "model_card.json").read_text())
    card["artifact"]["sha256"] = file_sha256(changed / "model.keras")
    (changed / "model_card.json").write_text(json.dumps(card))

    with pytest.raises(RegistryError, match="though its recipe did not fine-tune"):
        export_bundle(changed, tmp_path / "out", command="x")
    assert not (tmp_path / "out" / HEAD_FILE).exists()
