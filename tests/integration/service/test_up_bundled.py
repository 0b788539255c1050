"""A first start: `cxr-screen up` with nothing but the base weights screens a dropped film
with the bundled default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.integration.service.test_up import FAST, _drop
from tests.processes import Service, wait_until
from trainer.bundled import BUNDLE_DIR, HEAD_FILE

# Embedded defaults (SQLite, the embedded broker, folders under the working directory):
# no PostgreSQL or Redis, so not `integration`; the real VGG16 on a CPU makes it slow.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle_dir() -> Path:
    """The bundle the package ships, or skip before it is built."""
    if not (BUNDLE_DIR / HEAD_FILE).is_file():
        pytest.skip(
            f"{BUNDLE_DIR / HEAD_FILE} is absent: the bundled model is not built in this "
            "checkout yet (trainer.bundled.export_bundle writes it)"
        )
    return BUNDLE_DIR


def test_a_first_start_screens_with_the_bundled_model(
    bundle_dir: Path, vgg16_weights: Path, shared_data: Path, tmp_path: Path
) -> None:
    home = tmp_path / "site"
    home.mkdir()
    env = {**FAST, "CXR_BASE_WEIGHTS": str(vgg16_weights)}
    if bundle_dir != BUNDLE_DIR:  # another bundle (the fixture overridden) by its setting
        env["CXR_BUNDLED_MODEL_DIR"] = str(bundle_dir)
    card = json.loads((bundle_dir / "model_card.json").read_text())
    version = card["bundle"]["version"]
    service = Service(["up"], cwd=home, env=env, log=tmp_path / "up.log")
    try:
        service.wait_for_log("ready.", timeout=240)  # the screening worker
        film = sorted((shared_data / "chest_xray" / "val" / "NORMAL").glob("*.jpeg"))[0]
        _drop(film, home / "inbox")

        def screened() -> bool:
            rows = _results(home, env)
            return len(rows) == 1 and rows[0]["status"] in {"done", "rejected", "failed"}

        wait_until(screened, timeout=240, what="the film's result", interval=1.0)
        [row] = _results(home, env)
    finally:
        code = service.stop(timeout=90)
    output = service.output()
    assert code == 0, output[-3000:]
    assert row["status"] == "done", row
    assert str(row["model_version"]).startswith("bundled-")
    assert row["model_version"] == version
    assert row["label"] in ("NORMAL", "PNEUMONIA")
    assert (
        f"No model is active: putting the bundled default model {version} in service "
        "(trained on the Kermany 2018 training data; not for clinical use)."
    ) in output
    assert "CXR_DATA_DIR is not set" not in output  # no fallback warning: a model is active
    assert (home / "models" / version / "model.keras").is_file()
    listed = run_cli("models", "list", "--format", "jsonl", cwd=home, env=env)
    [model] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert model["status"] == "active"
    assert "not for clinical use" in model["notes"]


def _results(cwd: Path, env: dict[str, str]) -> list[dict[str, object]]:
    out = run_cli("results", "--format", "jsonl", "--limit", "0", cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]
