"""`cxr-screen inspect`: the table, the JSON and the previews an IT engineer relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cxr_screen.cli.inspect_cmd import inspect
from tests.unit.worker.imaging.factory import dicom_dataset, phantom, write_dicom, write_jpeg


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """The command on its own app, with settings from a clean environment in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXR_PSEUDONYM_KEY", "test key for inspect, 32 bytes or more")
    monkeypatch.delenv("CXR_CHEST_BODY_PARTS", raising=False)
    application = typer.Typer()
    # A callback keeps "inspect" a subcommand, as on the real multi-command app.
    application.callback()(lambda: None)
    application.command("inspect")(inspect)
    return application


@pytest.fixture
def scans(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "scans"
    folder.mkdir()
    return {
        "chest": write_dicom(
            dicom_dataset(phantom(100, 4000, np.uint16), bits_stored=12),
            folder / "chest.dcm",
        ),
        "hip": write_dicom(
            dicom_dataset(phantom(0, 255, np.uint8), body_part="HIP"), folder / "hip.dcm"
        ),
        "photo": write_jpeg(phantom(0, 255, np.uint8, 300, 300), folder / "photo.jpg"),
    }


def test_json_reports_metadata_decisions_and_errors(
    app: typer.Typer, scans: dict[str, Path]
) -> None:
    result = CliRunner().invoke(
        app, ["inspect", "--format", "json", str(scans["chest"]), str(scans["hip"])]
    )

    assert result.exit_code == 1, result.output  # the hip is not screened
    chest, hip = json.loads(result.stdout)
    assert chest["outcome"] == "accepted"
    assert chest["metadata"]["modality"] == "DX"
    assert chest["metadata"]["bits_stored"] == 12
    assert any("no window in header" in d for d in chest["decisions"])
    assert hip["outcome"] == "rejected"
    assert hip["code"] == "not_a_chest"
    assert hip["message"].startswith("hip.dcm: Body Part Examined is 'HIP', not a chest")
    assert hip["metadata"]["body_part"] == "HIP"  # header facts of a rejected scan
    assert "Doe" not in result.stdout


def test_table_and_previews_for_a_folder(
    app: typer.Typer, scans: dict[str, Path], tmp_path: Path
) -> None:
    preview = tmp_path / "preview"

    result = CliRunner().invoke(
        app, ["inspect", str(scans["chest"].parent), "--preview", str(preview)]
    )

    assert result.exit_code == 1
    for text in ("chest.dcm", "accepted", "hip.dcm", "not_a_chest", "photo.jpg", "DX"):
        assert text in result.stdout
    written = sorted(p.name for p in preview.iterdir())
    assert written == ["0000_chest.png", "0002_photo.png"]
    image = Image.open(preview / "0000_chest.png")
    assert (image.size, image.mode) == ((224, 224), "RGB")


def test_all_accepted_exits_zero(app: typer.Typer, scans: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["inspect", str(scans["photo"])])

    assert result.exit_code == 0, result.output
    assert "MONOCHROME2" in result.stdout


def test_missing_file_is_reported_not_raised(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", "--format", "json", str(tmp_path / "no.dcm")])

    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)
    assert (finding["outcome"], finding["code"]) == ("failed", "unreadable")
    assert "does not exist" in finding["message"]


def test_preview_of_a_file_with_a_long_name_fits_in_255_bytes(
    app: typer.Typer, tmp_path: Path
) -> None:
    """A legal 254-byte name plus the index and `.png` would pass the file-name limit."""
    name = "é" * 125 + ".jpg"  # 254 bytes in UTF-8
    photo = write_jpeg(phantom(0, 255, np.uint8, 300, 300), tmp_path / name)
    preview = tmp_path / "preview"

    result = CliRunner().invoke(app, ["inspect", str(photo), "--preview", str(preview)])

    assert result.exit_code == 0, result.output
    (written,) = preview.iterdir()
    assert len(written.name.encode()) <= 255
    assert written.name.startswith("0000_éé")
    assert written.suffix == ".png"
