"""Decoding DICOM files the tests build: every transfer syntax, photometric and bit depth,
VOI edge cases, files without file meta, and each out-of-scope case's typed error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from tests.unit.worker.imaging.factory import (
    PATIENT_NAME,
    dicom_dataset,
    orientation_margin,
    phantom,
    write_bare_dataset,
    write_dicom,
)
from worker.imaging import DecodeOptions, Radiograph, decode_path
from worker.imaging.errors import (
    Disposition,
    MultiFrame,
    NoPixelData,
    NotAChest,
    NotARadiograph,
    TooLarge,
    UnreadableScan,
)

OPTIONS = DecodeOptions(pseudonym_key=b"test-key-0123456789abcdef0123456")

# (dtype, bits stored, darkest, brightest stored value) for 8, 12 and 16 bit, unsigned
# and signed; the signed case spans negative values as real signed detectors do.
DEPTHS = {
    "8bit": (np.uint8, 8, 0, 255),
    "12bit": (np.uint16, 12, 100, 4000),
    "16bit": (np.uint16, 16, 1000, 60000),
    "16bit_signed": (np.int16, 16, -3000, 3000),
}


def _decode(path: Path, options: DecodeOptions = OPTIONS) -> Radiograph:
    return decode_path(path, options)


def _chest(depth: str, **attributes: Any) -> Dataset:
    dtype, bits, low, high = DEPTHS[depth]
    return dicom_dataset(phantom(low, high, dtype), bits_stored=bits, **attributes)


@pytest.mark.parametrize("depth", list(DEPTHS))
@pytest.mark.parametrize(
    ("syntax", "encoder"),
    [
        (ExplicitVRLittleEndian, None),
        (ImplicitVRLittleEndian, None),
        (ExplicitVRBigEndian, None),
        (DeflatedExplicitVRLittleEndian, None),
        (RLELossless, RLELossless),
        (JPEG2000Lossless, JPEG2000Lossless),
    ],
    ids=["explicit_le", "implicit_le", "explicit_be", "deflated", "rle", "j2k_lossless"],
)
def test_lossless_syntaxes_decode_to_the_same_display_pixels(
    tmp_path: Path, depth: str, syntax: str, encoder: str | None
) -> None:
    reference = _decode(write_dicom(_chest(depth), tmp_path / "reference.dcm"))
    ds = _chest(depth, transfer_syntax=ExplicitVRLittleEndian if encoder else syntax)
    radiograph = _decode(write_dicom(ds, tmp_path / "scan.dcm", compress=encoder))

    assert radiograph.metadata.transfer_syntax == syntax
    assert radiograph.pixels.dtype == np.float32
    assert radiograph.pixels.shape == reference.pixels.shape
    np.testing.assert_array_equal(radiograph.pixels, reference.pixels)
    assert orientation_margin(radiograph.pixels) > 0.3


def test_lossy_jpeg2000_decodes_close_to_the_original(tmp_path: Path) -> None:
    reference = _decode(write_dicom(_chest("12bit"), tmp_path / "reference.dcm"))
    ds = _chest("12bit")
    radiograph = _decode(write_dicom(ds, tmp_path / "j2k.dcm", compress=JPEG2000, j2k_cr=[5]))

    assert radiograph.metadata.transfer_syntax == JPEG2000
    assert float(np.abs(radiograph.pixels - reference.pixels).mean()) < 0.02
    assert orientation_margin(radiograph.pixels) > 0.3


@pytest.mark.parametrize("depth", list(DEPTHS))
def test_monochrome1_is_inverted(tmp_path: Path, depth: str) -> None:
    dtype, bits, low, high = DEPTHS[depth]
    stored = phantom(low, high, np.int64)
    mono1 = (low + high - stored).astype(dtype)  # white is low: the same chest, inverted
    mono2 = _decode(write_dicom(_chest(depth), tmp_path / "mono2.dcm"))
    ds = dicom_dataset(mono1, photometric="MONOCHROME1", bits_stored=bits)
    radiograph = _decode(write_dicom(ds, tmp_path / "mono1.dcm"))

    assert "inverted MONOCHROME1" in radiograph.decisions
    assert orientation_margin(radiograph.pixels) > 0.3
    np.testing.assert_allclose(radiograph.pixels, mono2.pixels, atol=0.02)


def test_presentation_lut_inverse_inverts_monochrome2(tmp_path: Path) -> None:
    plain = _decode(write_dicom(_chest("12bit"), tmp_path / "plain.dcm"))
    ds = _chest("12bit", PresentationLUTShape="INVERSE")
    radiograph = _decode(write_dicom(ds, tmp_path / "inverse.dcm"))

    assert any("Presentation LUT Shape INVERSE on MONOCHROME2" in d for d in radiograph.decisions)
    np.testing.assert_allclose(radiograph.pixels, 1.0 - plain.pixels, atol=1e-6)


@pytest.mark.parametrize(("shape", "note"), [("INVERSE", "agrees"), ("IDENTITY", "contradicts")])
def test_monochrome1_is_inverted_once_whatever_the_presentation_lut(
    tmp_path: Path, shape: str, note: str
) -> None:
    """MONOCHROME1 + INVERSE is the DX module's required pairing: one inversion, not two."""
    stored = (100 + 4000 - phantom(100, 4000, np.int64)).astype(np.uint16)
    ds = dicom_dataset(
        stored, photometric="MONOCHROME1", bits_stored=12, PresentationLUTShape=shape
    )
    radiograph = _decode(write_dicom(ds, tmp_path / "mono1.dcm"))

    assert any(note in d for d in radiograph.decisions)
    assert orientation_margin(radiograph.pixels) > 0.3


def test_sane_header_window_is_applied_exactly(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))
    ds = dicom_dataset(ramp, bits_stored=12, WindowCenter=2048, WindowWidth=2049)
    radiograph = _decode(write_dicom(ds, tmp_path / "window.dcm"))

    assert "window from header WC=2048, WW=2049" in radiograph.decisions
    # LINEAR (PS3.3 C.11.2.1.2.1): ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to 0..1.
    expected = np.clip((ramp - 2047.5) / 2048 + 0.5, 0, 1)
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-5)


def test_rescale_applies_before_the_window(tmp_path: Path) -> None:
    stored = phantom(0, 2000, np.uint16)
    ds = dicom_dataset(
        stored,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=1000,
        WindowWidth=4000,
    )
    radiograph = _decode(write_dicom(ds, tmp_path / "rescale.dcm"))

    assert "rescale slope 2, intercept -1000" in radiograph.decisions
    expected = np.clip((stored * 2.0 - 1000 - 999.5) / 3999 + 0.5, 0, 1)
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-5)


def test_signed_pixels_with_rescale_and_no_window_use_the_robust_range(tmp_path: Path) -> None:
    ds = _chest("16bit_signed", RescaleSlope=1, RescaleIntercept=-500)
    radiograph = _decode(write_dicom(ds, tmp_path / "signed.dcm"))

    assert any("no window in header" in d for d in radiograph.decisions)
    assert radiograph.pixels.min() == 0.0
    assert radiograph.pixels.max() == 1.0
    assert orientation_margin(radiograph.pixels) > 0.3


@pytest.mark.parametrize(
    ("center", "width", "why"),
    [
        (40000, 100, "entirely outside the pixel range"),
        (-5000, 200, "entirely outside the pixel range"),
        (2000, 0, "unusable width"),
        (2000, 2, "covers only"),
        (32768, 65536, "wider than the pixel range"),
    ],
)
def test_insane_header_window_falls_back_to_percentiles(
    tmp_path: Path, center: float, width: float, why: str
) -> None:
    """Real files carry windows for another bit depth or a pre-rescale range."""
    reference = _decode(write_dicom(_chest("12bit"), tmp_path / "none.dcm"))
    ds = _chest("12bit", WindowCenter=center, WindowWidth=width)
    radiograph = _decode(write_dicom(ds, tmp_path / "window.dcm"))

    (decision,) = [d for d in radiograph.decisions if "header window" in d]
    assert why in decision
    assert "percentile 0.5-99.5 fallback" in decision
    np.testing.assert_array_equal(radiograph.pixels, reference.pixels)
    assert orientation_margin(radiograph.pixels) > 0.3


def test_voi_lut_sequence_is_applied(tmp_path: Path) -> None:
    ds = _chest("12bit", WindowCenter=99999, WindowWidth=1)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    # A square-root curve over 12 bits, as a processing workstation might ship.
    item.LUTData = np.rint(np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16).tolist()
    ds.VOILUTSequence = [item]
    ds["VOILUTSequence"].value[0]["LUTData"].VR = "US"
    radiograph = _decode(write_dicom(ds, tmp_path / "voilut.dcm"))

    assert radiograph.decisions[-1] == "VOI LUT from header (4096 entries)"
    stored = pydicom.dcmread(tmp_path / "voilut.dcm").pixel_array
    np.testing.assert_allclose(radiograph.pixels, np.sqrt(stored / 4095), atol=1e-4)


def test_eight_bit_without_window_is_shown_as_stored(tmp_path: Path) -> None:
    stored = phantom(30, 220, np.uint8)
    radiograph = _decode(write_dicom(dicom_dataset(stored), tmp_path / "sc.dcm"))

    assert "8-bit pixels shown as stored (no window in header)" in radiograph.decisions
    np.testing.assert_allclose(radiograph.pixels, stored / 255.0, atol=1e-6)


def test_rgb_secondary_capture_of_a_chest_becomes_grey(tmp_path: Path) -> None:
    grey = phantom(0, 255, np.uint8)
    rgb = np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    ds = dicom_dataset(
        rgb, photometric="RGB", modality="OT", sop_class=SecondaryCaptureImageStorage
    )
    radiograph = _decode(write_dicom(ds, tmp_path / "sc_rgb.dcm"))

    assert "RGB converted to grey (luma)" in radiograph.decisions
    assert any(d.startswith("Secondary Capture") for d in radiograph.decisions)
    np.testing.assert_allclose(radiograph.pixels, grey / 255.0, atol=1e-5)


def test_missing_preamble_and_file_meta_is_read_with_care(tmp_path: Path) -> None:
    reference = _decode(write_dicom(_chest("12bit"), tmp_path / "reference.dcm"))
    path = write_bare_dataset(_chest("12bit"), tmp_path / "acr_nema.dcm")
    assert path.read_bytes()[128:132] != b"DICM"

    radiograph = _decode(path)

    assert radiograph.metadata.transfer_syntax == ImplicitVRLittleEndian
    assert "no preamble or file meta: read as a bare dataset" in radiograph.decisions
    assert any("Implicit VR Little Endian inferred" in d for d in radiograph.decisions)
    np.testing.assert_array_equal(radiograph.pixels, reference.pixels)


def test_file_meta_without_transfer_syntax_is_inferred(tmp_path: Path) -> None:
    path = write_dicom(_chest("8bit"), tmp_path / "no_ts.dcm")
    ds = pydicom.dcmread(path)
    del ds.file_meta.TransferSyntaxUID
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)

    radiograph = _decode(path)

    assert radiograph.metadata.transfer_syntax == ExplicitVRLittleEndian


def test_compressed_pixels_without_transfer_syntax_are_unreadable(tmp_path: Path) -> None:
    path = write_dicom(_chest("8bit"), tmp_path / "rle.dcm", compress=RLELossless)
    ds = pydicom.dcmread(path)
    del ds.file_meta.TransferSyntaxUID  # the pixel data stays encapsulated
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)

    with pytest.raises(UnreadableScan, match=r"rle\.dcm: has compressed pixel data but no"):
        _decode(path)


def test_multi_frame_is_rejected(tmp_path: Path) -> None:
    frames = np.stack([phantom(0, 255, np.uint8)] * 2)
    ds = dicom_dataset(frames[0], NumberOfFrames=2)
    ds.PixelData = frames.tobytes()

    with pytest.raises(MultiFrame, match=r"multi\.dcm: has 2 frames; only single-frame") as info:
        _decode(write_dicom(ds, tmp_path / "multi.dcm"))
    assert info.value.status is Disposition.REJECTED


def test_ct_is_not_a_radiograph(tmp_path: Path) -> None:
    ds = _chest("16bit_signed", modality="CT", sop_class=CTImageStorage, body_part="CHEST")

    with pytest.raises(NotARadiograph, match=r"ct\.dcm: is not a radiograph \(Modality CT, CT"):
        _decode(write_dicom(ds, tmp_path / "ct.dcm"))


def test_real_mr_sample_is_not_a_radiograph() -> None:
    path = Path(str(get_testdata_file("MR_small.dcm")))

    with pytest.raises(NotARadiograph, match="Modality MR") as info:
        _decode(path)
    assert info.value.status is Disposition.REJECTED
    assert info.value.code == "not_a_radiograph"


def test_structured_report_has_no_pixel_data() -> None:
    path = Path(str(get_testdata_file("test-SR.dcm")))

    with pytest.raises(NoPixelData, match=r"test-SR\.dcm: has no pixel data \(Modality SR"):
        _decode(path)


def test_secondary_capture_without_chest_body_part_is_not_a_radiograph(tmp_path: Path) -> None:
    ds = dicom_dataset(
        phantom(0, 255, np.uint8),
        modality="OT",
        body_part=None,
        sop_class=SecondaryCaptureImageStorage,
    )

    with pytest.raises(NotARadiograph, match=r"Secondary Capture .* no chest Body Part"):
        _decode(write_dicom(ds, tmp_path / "screenshot.dcm"))


def test_hip_is_not_a_chest_and_the_list_is_configurable(tmp_path: Path) -> None:
    path = write_dicom(_chest("12bit", body_part="HIP"), tmp_path / "hip.dcm")

    with pytest.raises(
        NotAChest,
        match=r"hip\.dcm: Body Part Examined is 'HIP', not a chest; .*CXR_CHEST_BODY_PARTS",
    ) as info:
        _decode(path)
    assert info.value.status is Disposition.REJECTED

    permissive = DecodeOptions(chest_body_parts=("chest", "hip"))
    assert _decode(path, permissive).metadata.body_part == "HIP"


def test_absent_body_part_is_accepted_and_said(tmp_path: Path) -> None:
    ds = _chest("8bit", body_part=None, view=None)
    radiograph = _decode(write_dicom(ds, tmp_path / "no_part.dcm"))

    assert "no Body Part Examined: accepted as chest" in radiograph.decisions
    assert radiograph.metadata.body_part is None


def test_lateral_view_is_accepted_and_recorded(tmp_path: Path) -> None:
    radiograph = _decode(write_dicom(_chest("8bit", view="LL"), tmp_path / "lateral.dcm"))

    assert radiograph.metadata.view_position == "LL"
    assert any(d.startswith("lateral view (LL)") for d in radiograph.decisions)


def test_header_over_the_pixel_cap_is_rejected_before_decoding(tmp_path: Path) -> None:
    ds = _chest("8bit")
    ds.Rows, ds.Columns = 20000, 10000  # the pixel data stays 60 x 80: never decoded

    with pytest.raises(TooLarge, match=r"claims 10000 x 20000 pixels.*CXR_MAX_PIXELS") as info:
        _decode(write_dicom(ds, tmp_path / "huge.dcm"))
    assert info.value.status is Disposition.REJECTED


def test_codestream_over_the_pixel_cap_is_rejected_before_decoding(tmp_path: Path) -> None:
    path = write_dicom(_chest("12bit"), tmp_path / "bomb.dcm", compress=JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    data = bytearray(ds.PixelData)
    siz = data.index(b"\xff\x4f\xff\x51") + 4
    data[siz + 4 : siz + 12] = (50000).to_bytes(4, "big") * 2  # Xsiz, Ysiz
    ds.PixelData = bytes(data)
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(TooLarge, match="compressed pixel data claims 50000 x 50000"):
        _decode(path)


def test_deflate_bomb_is_rejected_before_inflating(tmp_path: Path) -> None:
    zeros = np.zeros((3000, 3000), dtype=np.uint16)  # 18 MB that deflates to ~20 kB
    ds = dicom_dataset(zeros, transfer_syntax=DeflatedExplicitVRLittleEndian)
    path = write_dicom(ds, tmp_path / "deflated.dcm")
    options = DecodeOptions(max_file_bytes=4 * 1024**2)
    assert path.stat().st_size < options.max_file_bytes

    with pytest.raises(TooLarge, match="deflated dataset inflates to more than 4 MB"):
        _decode(path, options)


def test_file_over_the_size_cap_is_rejected_unread(tmp_path: Path) -> None:
    path = write_dicom(_chest("16bit"), tmp_path / "big.dcm")

    with pytest.raises(TooLarge, match=r"big\.dcm: is 0\.0 MB, over the cap.*CXR_MAX_FILE_MB"):
        _decode(path, DecodeOptions(max_file_bytes=1000))


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
def test_truncated_compressed_file_is_unreadable(tmp_path: Path) -> None:
    path = write_dicom(_chest("12bit"), tmp_path / "cut.dcm", compress=JPEG2000Lossless)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 600])

    with pytest.raises(UnreadableScan, match=r"cut\.dcm: .*truncated") as info:
        _decode(path)
    assert info.value.status is Disposition.FAILED
    assert info.value.code == "unreadable"


def test_truncated_native_pixel_data_is_unreadable(tmp_path: Path) -> None:
    path = write_dicom(_chest("16bit"), tmp_path / "short.dcm")
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(UnreadableScan, match=r"short\.dcm: its pixel data could not be decoded"):
        _decode(path)


def test_corrupt_codestream_is_unreadable(tmp_path: Path) -> None:
    path = write_dicom(_chest("12bit"), tmp_path / "corrupt.dcm", compress=JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    data = bytearray(ds.PixelData)
    start = data.index(b"\xff\x4f\xff\x51")
    data[start + 4 : start + 40] = b"\xff" * 36  # a mangled SIZ segment
    ds.PixelData = bytes(data)
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(UnreadableScan, match=r"corrupt\.dcm: its pixel data could not be decoded"):
        _decode(path)


@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")
@pytest.mark.parametrize(
    ("keyword", "placeholder", "garbage"),
    [("NumberOfFrames", "9191", b"abcd"), ("RescaleSlope", "8282", b"nope")],
)
def test_malformed_header_values_are_unreadable(
    tmp_path: Path, keyword: str, placeholder: str, garbage: bytes
) -> None:
    """pydicom refuses to write such values, so the file's bytes are patched instead."""
    path = write_dicom(_chest("12bit", **{keyword: placeholder}), tmp_path / "odd.dcm")
    data = path.read_bytes()
    assert data.count(placeholder.encode()) == 1
    path.write_bytes(data.replace(placeholder.encode(), garbage))

    with pytest.raises(UnreadableScan, match=r"odd\.dcm: has a malformed header value") as info:
        _decode(path)
    assert info.value.status is Disposition.FAILED


def test_patient_ref_is_a_keyed_hash_and_the_name_appears_nowhere(tmp_path: Path) -> None:
    ds = _chest("12bit", IssuerOfPatientID="HOSP-A", WindowCenter=40000, WindowWidth=10)
    radiograph = _decode(write_dicom(ds, tmp_path / "named.dcm"))
    other_key = DecodeOptions(pseudonym_key=b"another key, another site........")

    ref = radiograph.metadata.patient_ref
    assert ref is not None
    assert len(ref) == 32
    assert ref == _decode(tmp_path / "named.dcm").metadata.patient_ref
    assert ref != _decode(tmp_path / "named.dcm", other_key).metadata.patient_ref
    text = repr(radiograph.metadata) + " ".join(radiograph.decisions)
    for part in PATIENT_NAME.split("^"):
        assert part not in text
    assert "PID-0001" not in text


def test_no_patient_id_gives_no_patient_ref(tmp_path: Path) -> None:
    ds = _chest("8bit")
    del ds.PatientID
    assert _decode(write_dicom(ds, tmp_path / "anon.dcm")).metadata.patient_ref is None
