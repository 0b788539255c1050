"""Issue 13 item 6: no verdict on an image without usable content (non-finite rescale, one
value everywhere), from the real files; and a sparse but real chest is still screened."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cxr_screen.cli.inspect_cmd import inspect
from tests.adversarial.dicom_mutations import read_dataset, to_bytes
from worker.imaging import DecodeOptions, Radiograph, decode_bytes
from worker.imaging.errors import Disposition, NoUsableContent

OPTIONS = DecodeOptions(pseudonym_key=b"k" * 32)
NATIVE = "dx_thorax_lateral_animal.dcm"  # real, uncompressed, Rescale 1 / 0, WC 128 WW 256
PLACEHOLDER = "8282"  # a DS value whose bytes occur once in the file, then patched


def _with_header_text(dicom_dir: Path, keyword: str, text: str) -> bytes:
    """The real file with `keyword` set to the raw DS text `text` (4 characters).

    pydicom refuses to write "nan" or "inf" as a Decimal String, so a placeholder is
    written and its bytes replaced, as a broken modality's export would carry them.
    """
    ds = read_dataset(dicom_dir / NATIVE)
    setattr(ds, keyword, PLACEHOLDER)
    data = to_bytes(ds)
    assert data.count(PLACEHOLDER.encode()) == 1
    assert len(text) == len(PLACEHOLDER)
    return data.replace(PLACEHOLDER.encode(), text.encode())


def _no_verdict(data: bytes, name: str) -> NoUsableContent:
    with pytest.raises(NoUsableContent) as info:
        decode_bytes(data, Path(name), OPTIONS)
    error = info.value
    assert error.status is Disposition.FAILED
    assert error.code == "no_usable_content"
    assert error.message.startswith(f"{name}: ")
    assert "no verdict is given on it" in error.remedy
    return error


@pytest.mark.parametrize("slope", ["nan ", "inf ", "-inf"])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_non_finite_rescale_slope_gets_no_verdict(dicom_dir: Path, slope: str) -> None:
    """The old decoder screened these (NaN pixels through the window) and gave a label."""
    data = _with_header_text(dicom_dir, "RescaleSlope", slope)

    error = _no_verdict(data, "slope.dcm")

    assert f"Rescale Slope {slope.strip()}" in error.problem
    assert "not both finite numbers, so no pixel has a value" in error.problem


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rescale_that_overflows_gets_no_verdict(dicom_dir: Path) -> None:
    """Slope 1e38 is a finite number, but 255 x 1e38 is not a finite float32."""
    data = _with_header_text(dicom_dir, "RescaleSlope", "1e38")

    error = _no_verdict(data, "overflow.dcm")

    assert "gives pixel values that are not finite numbers" in error.problem


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_rescale_intercept_1e38_gets_no_verdict(dicom_dir: Path) -> None:
    """Intercept 1e38 swamps every stored value: one number everywhere, an all-black input
    that the old decoder screened."""
    data = _with_header_text(dicom_dir, "RescaleIntercept", "1e38")

    error = _no_verdict(data, "intercept.dcm")

    assert "maps every stored value to the same number" in error.problem


@pytest.mark.parametrize(("specks", "dither"), [(0, False), (30, False), (0, True)])
def test_constant_dicom_gets_no_verdict(dicom_dir: Path, specks: int, dither: bool) -> None:
    """The real file's pixels set to one grey level, with up to 0.1 % of white specks or
    +-1 level of noise (what a JPEG round trip or dithering leaves of a blank image)."""
    ds = read_dataset(dicom_dir / NATIVE)
    flat = np.full((ds.Rows, ds.Columns), 128, dtype=np.uint8)
    flat.ravel()[:: max(1, flat.size // max(specks, 1))][:specks] = 255
    if dither:
        flat += np.random.default_rng(0).integers(-1, 2, flat.shape).astype(np.uint8)
    ds.PixelData = flat.tobytes()

    error = _no_verdict(to_bytes(ds), "flat.dcm")

    assert "is flat: 99 % of its pixels have one of three adjacent values" in error.problem


def _raster(image: Image.Image, kind: str) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "kind", "value"),
    [("L", "JPEG", 128), ("L", "PNG", 0), ("RGB", "JPEG", (90, 90, 90)), ("I;16", "PNG", 4000)],
)
def test_constant_jpeg_and_png_get_no_verdict(
    shared_data: Path, mode: str, kind: str, value: object
) -> None:
    """A real chest JPEG's size and format, its content one grey level (8- and 16-bit)."""
    real = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0]
    size = Image.open(real).size
    image = Image.new(mode, size, value)  # type: ignore[arg-type]

    error = _no_verdict(_raster(image, kind), f"flat.{kind.lower()}")

    assert "is flat" in error.problem


def test_sparse_but_real_chest_is_still_screened(shared_data: Path) -> None:
    """The criterion is not "mostly black": a real chest on 6 % of a black canvas passes."""
    real = Image.open(sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0])
    chest = real.convert("L").resize((250, 250))
    canvas = Image.new("L", (1000, 1000), 0)
    canvas.paste(chest, (700, 700))

    radiograph = decode_bytes(_raster(canvas, "PNG"), Path("sparse.png"), OPTIONS)

    assert isinstance(radiograph, Radiograph)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_inspect_reports_no_usable_content(
    dicom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cxr-screen inspect` shows the refusal as `failed` with its code, not a label."""
    path = tmp_path / "nan.dcm"
    path.write_bytes(_with_header_text(dicom_dir, "RescaleSlope", "nan "))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXR_PSEUDONYM_KEY", "a key for the inspect test, 32+ bytes")
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("inspect")(inspect)

    result = CliRunner().invoke(app, ["inspect", "--format", "json", str(path)])

    assert result.exit_code == 1, result.output
    (finding,) = json.loads(result.stdout)
    assert (finding["outcome"], finding["code"]) == ("failed", "no_usable_content")
    assert finding["message"].startswith("nan.dcm: its header has Rescale Slope nan")


def test_dithered_blank_png_gets_no_verdict(shared_data: Path) -> None:
    """One grey level with +-1 of noise: still no image, whatever the noise's pattern."""
    real = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0]
    width, height = Image.open(real).size
    noise = np.random.default_rng(1).integers(-1, 2, (height, width))
    image = Image.fromarray((100 + noise).astype(np.uint8))

    error = _no_verdict(_raster(image, "PNG"), "dithered.png")

    assert "is flat: 99 % of its pixels lie within two grey levels" in error.problem
