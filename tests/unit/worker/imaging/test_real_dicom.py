"""The real radiograph DICOM files in ../shared/data/dicom: each ends where it should, the
chest PA files are the right way round, and a JPEG export agrees with its DICOM."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1

from tests.unit.worker.imaging.factory import orientation_margin
from worker.imaging import DecodeOptions, Radiograph, decode_path, to_model_input
from worker.imaging.errors import Disposition, NotAChest, ScreeningError, UnreadableScan

OPTIONS = DecodeOptions(pseudonym_key=b"test-key-0123456789abcdef0123456")
CHEST_PA = (
    "cr_chest_pa_mono1_j2k_lossless.dcm",
    "dx_chest_pa_mono1_inverse_plut_j2k.dcm",
    "cr_chest_sc_jpeg_baseline.dcm",
)
# What each real file's header says (checked with pydicom) and what must come of it.
ACCEPTED = {
    "cr_chest_pa_mono1_j2k_lossless.dcm": (
        "CR",
        "CHEST",
        "PA",
        "MONOCHROME1",
        15,
        JPEG2000Lossless,
    ),
    "dx_chest_pa_mono1_inverse_plut_j2k.dcm": (
        "DX",
        "CHEST",
        "PA",
        "MONOCHROME1",
        12,
        JPEG2000Lossless,
    ),
    "cr_chest_sc_jpeg_baseline.dcm": ("CR", "CHEST", "PA", "MONOCHROME2", 8, JPEGBaseline8Bit),
    # A dog's lateral thorax: THORAX is a chest body part, so it is screened. The header
    # has no View Position (the word LATERAL is only in a free-text processing
    # description), so the view is recorded as unknown rather than guessed.
    "dx_thorax_lateral_animal.dcm": ("DX", "THORAX", None, "MONOCHROME1", 8, "1.2.840.10008.1.2.1"),
}
REJECTED = {
    "cr_hip_jpeg_lossless.dcm": NotAChest,
    # Also a HIP: scope is decided from the header before any pixel is decoded, so it is
    # rejected as not a chest without touching its corrupt JPEG stream.
    "broken_cr_hip_jpeg_extended.dcm": NotAChest,
}


@pytest.fixture(scope="module")
def decoded(dicom_dir: Path) -> dict[str, Radiograph | ScreeningError]:
    """Every real file decoded once (the JPEG 2000 ones take about a second each)."""
    results: dict[str, Radiograph | ScreeningError] = {}
    for path in sorted(dicom_dir.glob("*.dcm")):
        try:
            results[path.name] = decode_path(path, OPTIONS)
        except ScreeningError as exc:
            results[path.name] = exc
    return results


def test_every_real_file_is_expected(decoded: dict[str, Radiograph | ScreeningError]) -> None:
    assert set(decoded) == set(ACCEPTED) | set(REJECTED)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_real_radiographs_decode_with_their_header_facts(
    decoded: dict[str, Radiograph | ScreeningError], name: str
) -> None:
    radiograph = decoded[name]
    assert isinstance(radiograph, Radiograph), radiograph
    meta = radiograph.metadata
    modality, body_part, view, photometric, bits, syntax = ACCEPTED[name]
    assert (meta.modality, meta.body_part, meta.view_position) == (modality, body_part, view)
    assert (meta.photometric_interpretation, meta.bits_stored) == (photometric, bits)
    assert meta.transfer_syntax == syntax
    assert radiograph.pixels.shape == (meta.rows, meta.columns)
    assert radiograph.pixels.dtype == np.float32
    assert float(radiograph.pixels.min()) >= 0.0
    assert float(radiograph.pixels.max()) <= 1.0
    assert meta.sop_instance_uid
    assert meta.study_instance_uid
    assert meta.series_instance_uid
    assert meta.patient_ref is not None
    assert len(meta.patient_ref) == 32
    if photometric == "MONOCHROME1":
        assert any(d.startswith("inverted MONOCHROME1") for d in radiograph.decisions)
    model_input = to_model_input(radiograph)
    assert model_input.shape == (224, 224, 3)
    assert model_input.dtype == np.uint8


@pytest.mark.parametrize("name", CHEST_PA)
def test_chest_pa_shows_dark_lungs_and_a_bright_mediastinum(
    decoded: dict[str, Radiograph | ScreeningError], name: str
) -> None:
    """Centre band (45-55 % of the width) brighter than both lung bands (20-35 %, 65-80 %),
    on rows 30-70 %, by at least 0.05 (13 grey levels). A missed MONOCHROME1 inversion, a
    double inversion (MONOCHROME1 plus Presentation LUT INVERSE) or a wrong window turns
    this negative: on these files the inverted margins are -0.2 to -0.3."""
    radiograph = decoded[name]
    assert isinstance(radiograph, Radiograph), radiograph
    margin = orientation_margin(radiograph.pixels)
    assert margin > 0.05, f"{name}: centre - brighter lung = {margin:.3f}"
    assert orientation_margin(1.0 - radiograph.pixels) < -0.05  # the check can fail


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_hip_files_are_rejected_as_not_a_chest(
    decoded: dict[str, Radiograph | ScreeningError], name: str
) -> None:
    error = decoded[name]
    assert isinstance(error, REJECTED[name])
    assert error.status is Disposition.REJECTED
    assert error.code == "not_a_chest"
    assert error.message.startswith(f"{name}: Body Part Examined is 'HIP', not a chest; ")
    assert "CXR_CHEST_BODY_PARTS" in error.message


def test_broken_file_fails_as_unreadable_once_in_scope(dicom_dir: Path) -> None:
    """With HIP accepted, the corrupt JPEG extended stream is reached and reported."""
    options = DecodeOptions(chest_body_parts=("CHEST", "HIP"))
    path = dicom_dir / "broken_cr_hip_jpeg_extended.dcm"

    with pytest.raises(UnreadableScan, match="its pixel data could not be decoded") as info:
        decode_path(path, options)
    assert info.value.status is Disposition.FAILED
    assert info.value.message.startswith("broken_cr_hip_jpeg_extended.dcm: ")


def test_hip_decodes_once_in_scope(dicom_dir: Path) -> None:
    """The lossless hip proves the JPEG lossless SV1 path on a real 10-bit file."""
    options = DecodeOptions(chest_body_parts=("CHEST", "HIP"))
    radiograph = decode_path(dicom_dir / "cr_hip_jpeg_lossless.dcm", options)

    assert radiograph.metadata.transfer_syntax == JPEGLosslessSV1
    assert radiograph.pixels.shape == (2140, 1760)
    assert "window from header WC=511, WW=1024" in radiograph.decisions


@pytest.mark.parametrize("name", CHEST_PA)
def test_dicom_and_its_jpeg_export_give_the_same_model_input(
    decoded: dict[str, Radiograph | ScreeningError], name: str, tmp_path: Path
) -> None:
    """Mean absolute difference of the 224 x 224 model inputs, in grey levels (0-255).

    Full-size decode of the export: at most 0.5. Quantising the display pixels to 8 bits
    costs up to 0.5 level per pixel and JPEG quality 95 about 1 level at full size, but
    both are zero-mean noise that the 8-9x area downsampling averages away (measured
    0.06-0.07). Default draft decode: at most 1.5. DCT scaling averages fixed 8 x 8
    blocks, so sharp edges (collimation, markers) land up to half a block away from
    where the area resize of the DICOM puts them (measured 0.6-0.95). A systematic error
    (window, gamma, inversion, orientation) moves thousands of pixels by tens of levels,
    far beyond either bound.
    """
    radiograph = decoded[name]
    assert isinstance(radiograph, Radiograph), radiograph
    display = np.rint(radiograph.pixels * 255).astype(np.uint8)
    buffer = BytesIO()
    Image.fromarray(display).save(buffer, format="JPEG", quality=95)
    export = tmp_path / "export.jpeg"
    export.write_bytes(buffer.getvalue())
    from_dicom = to_model_input(radiograph).astype(np.int16)

    for options, tolerance in [(DecodeOptions(draft_size=None), 0.5), (OPTIONS, 1.5)]:
        from_jpeg = to_model_input(decode_path(export, options)).astype(np.int16)
        difference = float(np.abs(from_jpeg - from_dicom).mean())
        assert difference <= tolerance, f"{name}, draft {options.draft_size}: {difference:.2f}"
