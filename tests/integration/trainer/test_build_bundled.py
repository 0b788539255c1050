"""The bundled default model is reproducible: its documented command, run on a subset of
the real training films, builds a bundle of the same recipe that installs and screens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from trainer.bundled import BUNDLE_DIR, HEAD_FILE
from trainer.bundled_block import TUNED_FILE

# The real VGG16 on a CPU (about 90 films through blocks 1-4 and 18 through the whole
# model twice, block 5 trained on 20 views, and the base built three times);
# embedded SQLite only, so not `integration`.
pytestmark = pytest.mark.slow

MAX_BUNDLE_BYTES = 30 * 1024 * 1024


def _subset(shared_data: Path, target: Path, *, train: int, val: int) -> Path:
    """Links to the first films of each class: train/ from train/, val/ from val/."""
    for split, count in (("train", train), ("val", val)):
        for label in ("NORMAL", "PNEUMONIA"):
            folder = target / split / label
            folder.mkdir(parents=True)
            for film in sorted((shared_data / "chest_xray" / split / label).glob("*.jpeg"))[:count]:
                (folder / film.name).symlink_to(film)
    return target


def test_the_documented_command_rebuilds_the_bundle_on_a_subset(
    shared_data: Path, vgg16_weights: Path, tmp_path: Path
) -> None:
    data = _subset(shared_data, tmp_path / "chest_xray", train=5, val=4)
    out = tmp_path / "bundle"
    env = {
        "CXR_BASE_WEIGHTS": str(vgg16_weights),
        "CXR_MODEL_DIR": str(tmp_path / "models"),
        "CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'cxr.db'}",
    }
    built = run_cli(
        "models", "build-bundled", str(data), "--out", str(out), cwd=tmp_path, env=env,
        timeout=900,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {
        HEAD_FILE,
        TUNED_FILE,
        "model_card.json",
        "report.png",
    }
    assert sum(p.stat().st_size for p in out.iterdir()) < MAX_BUNDLE_BYTES
    card = json.loads((out / "model_card.json").read_text())
    bundle = card["bundle"]
    # The default recipe fine-tunes VGG16's block 5: the bundle carries it, in float16
    # when the 64-film comparison (here the 8 val films) says the answers do not move.
    assert card["training"]["fine_tune"]
    tuned = bundle["tuned_block"]
    assert tuned["layers"] == ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert tuned["precision"]["compared_on_images"] == 1 + 8
    assert tuned["precision"]["dtype"] in ("float16", "float32")
    if tuned["precision"]["dtype"] == "float16":
        assert tuned["precision"]["verdicts_changed"] == 0
    assert bundle["version"].startswith("bundled-")
    assert bundle["trained_by"] == "cxr-screen models build-bundled chest_xray"
    assert "CC BY 4.0" in bundle["data"]
    assert "not for clinical use" in bundle["not_for_clinical_use"].lower()
    assert card["data"]["counts"]["train"] == {"NORMAL": 5, "PNEUMONIA": 5}
    assert card["shifted_evaluation"]["n"] == 8 * 8
    assert card["calibration"]["temperature"] > 0
    assert card["model"]["threshold_chosen_on"]["chosen"] == card["model"]["threshold"]
    packaged = BUNDLE_DIR / "model_card.json"
    if packaged.is_file():
        # The packaged bundle is this command's output on the whole training set: the
        # same recipe, the same base weights.
        shipped = json.loads(packaged.read_text())
        same = {k: v for k, v in card["training"].items() if k != "base_weights"}
        assert same == {k: v for k, v in shipped["training"].items() if k != "base_weights"}
        assert card["base_weights"]["tensors_sha256"] == shipped["base_weights"]["tensors_sha256"]
        assert shipped["bundle"]["trained_by"] == bundle["trained_by"]

    # Installed on a first start with no model, it screens a real film.
    site = {**env, "CXR_BUNDLED_MODEL_DIR": str(out)}
    assert run_cli("db", "upgrade", cwd=tmp_path, env=site).returncode == 0
    installed = run_cli("models", "install-bundled", cwd=tmp_path, env=site, timeout=300)
    assert installed.returncode == 0, installed.stderr
    assert bundle["version"] in installed.stdout
    film = sorted((shared_data / "chest_xray" / "val" / "PNEUMONIA").glob("*.jpeg"))[-1]
    screened = run_cli(
        "screen", str(film), "--no-record", "--format", "jsonl", cwd=tmp_path, env=site,
        timeout=300,
    )  # fmt: skip
    assert screened.returncode == 0, screened.stderr
    [row] = [json.loads(line) for line in screened.stdout.splitlines()]
    assert row["model_version"] == bundle["version"]
    assert row["label"] in ("NORMAL", "PNEUMONIA")
    assert 0.0 <= float(row["probability"]) <= 1.0
