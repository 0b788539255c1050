"""`cxr-screen train | evaluate | models ...` in process, on a tiny model and SQLite/PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from PIL import Image
from sqlalchemy import Engine
from typer.testing import CliRunner

from cxr_screen.cli.common import CommandError
from cxr_screen.cli.training_cmd import evaluate, models_app, train
from tests.cli_runner import run_cli
from tests.unit.trainer.conftest import make_dataset, tiny_train_config
from trainer.train import TrainConfig

TINY = tiny_train_config(epochs=6)


@pytest.fixture
def cli(
    database_url: str,
    migrated_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[typer.Typer, dict[str, str]]:
    monkeypatch.chdir(tmp_path)  # the decoder's key file goes to ./var
    monkeypatch.setattr(TrainConfig, "from_settings", classmethod(lambda cls, s, **kw: TINY))
    app = typer.Typer()
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.add_typer(models_app, name="models")
    env = {
        "CXR_DATABASE_URL": database_url,
        "CXR_MODEL_DIR": str(tmp_path / "models"),
        "CXR_DATA_DIR": str(make_dataset(tmp_path / "data", train=8, val=6)),
        "CXR_BASE_WEIGHTS": "none",
    }
    return app, env


def _invoke(cli: tuple[typer.Typer, dict[str, str]], *args: str) -> Any:
    app, env = cli
    return CliRunner().invoke(app, list(args), env=env)


def test_train_evaluate_list_and_errors(
    cli: tuple[typer.Typer, dict[str, str]], tmp_path: Path
) -> None:
    first = _invoke(cli, "train", "--format", "json")
    assert first.exit_code == 0, first.output
    outcome = json.loads(first.stdout)
    assert outcome["promoted"] is True
    version = outcome["version"]

    again = _invoke(cli, "train")
    assert again.exit_code == 0, again.output
    assert "skipped: data unchanged" in again.stdout

    listed = _invoke(cli, "models", "list", "--format", "jsonl")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["version"], r["status"]) for r in rows] == [(version, "active")]
    assert rows[0]["auc"] >= 0.9

    report = tmp_path / "report.png"
    evaluated = _invoke(
        cli, "evaluate", str(tmp_path / "data/val"), "--format", "json", "--report", str(report)
    )
    assert evaluated.exit_code == 0, evaluated.output
    figures = json.loads(evaluated.stdout)
    assert figures["model_version"] == version
    assert figures["n"] == 12
    assert figures["auc"] == pytest.approx(outcome["evaluation"]["auc"])
    assert {"sensitivity", "specificity", "confusion_matrix", "per_class"} <= figures.keys()
    assert report.read_bytes()[:4] == b"\x89PNG"
    with Image.open(report) as picture:  # ROC, confusion matrix, reliability curves
        assert picture.width > 2.5 * picture.height
    assert figures["inference_precision"] == "float32"
    assert figures["fell_back_to_float32"] == 0
    table = _invoke(cli, "evaluate", str(tmp_path / "data/val"), "--model", version)
    assert "sensitivity" in table.stdout

    # As a worker with CXR_PRECISION=mixed_bfloat16 would serve it: the whole model runs
    # in 16 bits (not the float32 feature cache), and the figures barely move.
    mixed = _invoke(
        cli, "evaluate", str(tmp_path / "data/val"), "-f", "json", "--precision", "mixed_bfloat16"
    )
    assert mixed.exit_code == 0, mixed.output
    mixed_figures = json.loads(mixed.stdout)
    assert mixed_figures["inference_precision"] == "mixed_bfloat16"
    assert mixed_figures["n"] == 12
    assert mixed_figures["auc"] == pytest.approx(figures["auc"], abs=0.05)
    wrong = _invoke(cli, "evaluate", str(tmp_path / "data/val"), "--precision", "fp8")
    assert wrong.exit_code == 2
    said = " ".join(wrong.output.replace("│", " ").split())  # rich wraps the message
    assert "'fp8' is not one of float32, mixed_float16, mixed_bfloat16" in said

    for args, message in [
        (("evaluate", str(tmp_path / "nope")), "is not a folder"),
        (("evaluate", str(tmp_path / "data/val"), "--model", "v0"), "no model version 'v0'"),
        (("evaluate", str(tmp_path / "data")), "class folders ['train', 'val']"),
        (("models", "promote", version), "already the active model"),
        (("models", "rollback"), "only model that was ever active"),
    ]:
        failed = _invoke(cli, *args)
        assert isinstance(failed.exception, CommandError), failed.output
        assert message in str(failed.exception)

    # A second model's table output: the shifted copy, thresholds and calibration too.
    forced = _invoke(cli, "train", "--force")
    assert forced.exit_code == 0, forced.output
    assert "on its shifted copy" in forced.stdout
    assert "never trained on: jpeg_q25" in forced.stdout
    assert "ECE on the evaluation folder" in forced.stdout
    assert "shifted copy:" in forced.stdout  # the gate's comparison there


def test_evaluate_without_an_active_model_says_so(
    cli: tuple[typer.Typer, dict[str, str]], tmp_path: Path
) -> None:
    failed = _invoke(cli, "evaluate", str(tmp_path / "data/val"))
    assert isinstance(failed.exception, CommandError)
    assert "there is no active model; train one" in str(failed.exception)


def test_the_installed_command_prints_one_line_errors(tmp_path: Path) -> None:
    done = run_cli("evaluate", str(tmp_path / "missing"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"cxr-screen: error: {tmp_path / 'missing'} is not a folder"
