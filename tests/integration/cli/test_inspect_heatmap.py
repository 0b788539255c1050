"""`cxr-screen inspect --heatmap`: the worker's heatmap picture of any file, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.cli_runner import run_cli
from tests.tiny_model import TINY_SIZE, register_model
from worker.pipeline.heatmap_picture import CAPTION_HEIGHT, SCALE

KEY = {"CXR_PSEUDONYM_KEY": "test-pseudonym-key-0123456789abcdef"}


def test_inspect_writes_the_heatmap_of_each_accepted_file(
    shared_data: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'cxr.db'}"
    engine = make_engine(url)
    upgrade(engine)
    register_model(make_session_factory(engine), model_dir=tmp_path / "models", version="tiny-1")
    engine.dispose()
    chest = shared_data / "dicom" / "cr_chest_sc_jpeg_baseline.dcm"
    hip = shared_data / "dicom" / "cr_hip_jpeg_lossless.dcm"
    out = tmp_path / "heatmaps"

    done = run_cli(
        "inspect", "--heatmap", str(out), "--format", "json", str(chest), str(hip),
        cwd=tmp_path, env={"CXR_DATABASE_URL": url, **KEY},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the hip is out of scope
    accepted, rejected = json.loads(done.stdout)
    assert rejected["outcome"] == "rejected"
    assert rejected["heatmap"] is None
    picture = Path(accepted["heatmap"])
    assert picture.parent == out
    assert picture.name == "0000_cr_chest_sc_jpeg_baseline.heatmap.png"
    assert accepted["verdict"].endswith("(tiny-1)")
    with Image.open(picture) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (SCALE * TINY_SIZE + CAPTION_HEIGHT, 2 * SCALE * TINY_SIZE, 3)

    table = run_cli(
        "inspect", "--heatmap", str(out), str(chest),
        cwd=tmp_path, env={"CXR_DATABASE_URL": url, **KEY},
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "heatmap:" in table.stdout
    assert "tiny-1" in table.stdout


def test_inspect_heatmap_without_a_model_says_what_to_do(shared_data: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cxr.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    done = run_cli(
        "inspect", "--heatmap", str(tmp_path / "out"),
        str(shared_data / "dicom" / "cr_chest_sc_jpeg_baseline.dcm"),
        cwd=tmp_path, env={"CXR_DATABASE_URL": url, **KEY},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--heatmap needs an active model" in done.stderr
    assert "cxr-screen train" in done.stderr
