"""The shifted copy of a split: deterministic site changes of real films, evaluated as a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.cli_runner import run_cli
from tests.tiny_model import register_model
from trainer.data import scan_split
from trainer.site_shift import (
    HELD_OUT_SHIFTS,
    SHIFTS,
    TRAINED_SHIFTS,
    random_site_change,
    shifted,
    write_shifted,
)
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput, Prepared, prepare_file

MODEL_INPUT = ModelInput.of(224, DecodeOptions())


@pytest.fixture
def val(shared_data: Path, tmp_path: Path) -> Path:
    """Two real val films per class."""
    folder = tmp_path / "val"
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir(parents=True)
        for source in sorted((shared_data / "chest_xray" / "val" / label).iterdir())[:2]:
            shutil.copy(source, folder / label / source.name)
    return folder


def _pixels(path: Path) -> np.ndarray:
    prepared = prepare_file(path, MODEL_INPUT)
    assert isinstance(prepared, Prepared), path
    return prepared.image


@pytest.mark.parametrize("name", sorted(SHIFTS))
def test_each_change_is_deterministic_and_changes_the_film(val: Path, name: str) -> None:
    film = _pixels(next((val / "NORMAL").iterdir()))
    once, again = shifted(film, name, "ab" * 32), shifted(film, name, "ab" * 32)
    assert once.shape == film.shape[:2]
    assert once.dtype == np.uint8
    assert np.array_equal(once, again)
    changed = np.abs(once.astype(int) - film[..., 0].astype(int))
    assert (changed > 2).sum() > 200, f"{name} must change the film"


def test_markers_land_where_the_image_hash_says() -> None:
    film = np.full((224, 224, 3), 60, np.uint8)
    places = {shifted(film, "markers", f"{i:064x}").tobytes() for i in range(6)}
    assert len(places) > 1, "marker corners vary from film to film"


def test_the_copy_is_a_labelled_folder_written_once(val: Path, tmp_path: Path) -> None:
    split = scan_split(val, classes=("NORMAL", "PNEUMONIA"))
    copy = write_shifted(split, tmp_path / "shifted", MODEL_INPUT)
    assert copy.written == 4 * len(SHIFTS)
    assert copy.skipped == []
    shifted_split = copy.split(("NORMAL", "PNEUMONIA"))
    assert shifted_split.counts() == {"NORMAL": 2 * len(SHIFTS), "PNEUMONIA": 2 * len(SHIFTS)}
    assert {image.path.parent.name for image in shifted_split.images} == set(SHIFTS)
    before = {p: p.read_bytes() for p in (tmp_path / "shifted").rglob("*.png")}
    assert write_shifted(split, tmp_path / "shifted", MODEL_INPUT).written == 0
    assert before == {p: p.read_bytes() for p in (tmp_path / "shifted").rglob("*.png")}
    # Lossless: evaluating a copy decodes exactly the shifted model input.
    image = shifted_split.images[0]
    source = next(i for i in split.images if i.sha256 == image.path.stem)
    expected = shifted(_pixels(source.path), image.path.parent.name, source.sha256)
    assert np.array_equal(_pixels(image.path)[..., 0], expected)


def test_evaluate_shifted_reports_pooled_and_per_change_figures(val: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cxr.db'}"
    engine = make_engine(url)
    upgrade(engine)
    register_model(make_session_factory(engine), model_dir=tmp_path / "models", version="tiny-1")
    engine.dispose()
    env = {"CXR_DATABASE_URL": url, "CXR_MODEL_DIR": str(tmp_path / "models")}
    done = run_cli("evaluate", str(val), "--shifted", "--format", "json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["n"] == 4
    assert figures["shifted"]["n"] == 4 * len(SHIFTS)
    assert set(figures["shifted"]["shifts"]) == set(SHIFTS)
    assert all(f["n"] == 4 for f in figures["shifted"]["shifts"].values())
    assert figures["shifted"]["threshold"] == figures["threshold"]
    for part in (figures, figures["shifted"]):
        assert 0.0 <= part["calibration"]["ece"] <= 1.0
        assert sum(b["n"] for b in part["calibration"]["bins"]) == part["n"]
    kept = list((tmp_path / "models").rglob("shifted/*/NORMAL/zoom_in/*.png"))
    assert len(kept) == 2, "the copy is kept beside the models"

    table = run_cli("evaluate", str(val), "--shifted", cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    assert "on the shifted copy" in table.stdout
    assert "jpeg_q25" in table.stdout
    assert "expected calibration error of the PNEUMONIA probability" in table.stdout


def test_training_site_changes_are_reproducible_vary_and_keep_the_film(val: Path) -> None:
    film = _pixels(next((val / "PNEUMONIA").iterdir()))
    views = [random_site_change(film, f"{i:064x}", "site-v1-1") for i in range(12)]
    assert all(v.shape == film.shape and v.dtype == np.uint8 for v in views)
    assert all(np.array_equal(v[..., 0], v[..., 2]) for v in views), "still grey"
    assert np.array_equal(views[0], random_site_change(film, f"{0:064x}", "site-v1-1"))
    assert not np.array_equal(views[0], random_site_change(film, f"{0:064x}", "site-v1-2"))
    assert len({v.tobytes() for v in views}) == len(views), "each film its own change"
    # A change, not a new picture: the film stays correlated with the original.
    for v in views:
        r = np.corrcoef(v[..., 0].ravel().astype(float), film[..., 0].ravel().astype(float))[0, 1]
        assert r > 0.3


def test_the_held_out_changes_are_never_trained_on() -> None:
    assert set(TRAINED_SHIFTS) | set(HELD_OUT_SHIFTS) == set(SHIFTS)
    assert not set(TRAINED_SHIFTS) & set(HELD_OUT_SHIFTS)
    assert {"jpeg_q25", "half_resolution", "markers"} == set(HELD_OUT_SHIFTS)


def test_a_folder_of_links_into_an_image_store_gets_its_copy(val: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    for film in val.glob("*/*"):
        (linked / film.parent.name).mkdir(parents=True, exist_ok=True)
        (linked / film.parent.name / film.name).symlink_to(film)
    split = scan_split(linked, classes=("NORMAL", "PNEUMONIA"))
    copy = write_shifted(split, tmp_path / "shifted", MODEL_INPUT)
    assert copy.skipped == []
    assert copy.written == len(split.images) * len(SHIFTS)
