"""Codecs no installed encoder can write (JPEG baseline, extended, lossless, JPEG-LS), from
pydicom-data samples relabelled as chest DX so the scope checks let them through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from tests.unit.worker.imaging.factory import relabelled_testdata
from worker.imaging import DecodeOptions, Radiograph, decode_path, to_model_input

OPTIONS = DecodeOptions(pseudonym_key=b"test-key-0123456789abcdef0123456")


def _decode(path: Path) -> Radiograph:
    return decode_path(path, OPTIONS)


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("MR_small_RLE.dcm", RLELossless),
        ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),
        ("MR_small_jp2klossless.dcm", JPEG2000Lossless),
    ],
)
def test_lossless_codecs_match_the_uncompressed_sample(
    tmp_path: Path, name: str, syntax: str
) -> None:
    """The same signed 16-bit MR slice, compressed three ways, decodes identically."""
    reference = _decode(relabelled_testdata("MR_small.dcm", tmp_path / "reference.dcm"))
    radiograph = _decode(relabelled_testdata(name, tmp_path / name))

    assert reference.metadata.transfer_syntax == ExplicitVRLittleEndian
    assert radiograph.metadata.transfer_syntax == syntax
    np.testing.assert_array_equal(radiograph.pixels, reference.pixels)


@pytest.mark.parametrize(
    ("name", "syntax", "bits"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit, 8),
        ("JPGExtended.dcm", JPEGExtended12Bit, 12),
        ("JPEG-LL.dcm", JPEGLosslessSV1, 16),
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", JPEGLosslessSV1, 8),
        ("JPEGLSNearLossless_08.dcm", JPEGLSNearLossless, 8),
        ("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless, 16),
        ("JPEG2000.dcm", JPEG2000, 16),
    ],
)
def test_every_jpeg_family_codec_decodes(tmp_path: Path, name: str, syntax: str, bits: int) -> None:
    radiograph = _decode(relabelled_testdata(name, tmp_path / name))

    assert radiograph.metadata.transfer_syntax == syntax
    assert radiograph.metadata.bits_stored == bits
    pixels = radiograph.pixels
    assert pixels.shape == (radiograph.metadata.rows, radiograph.metadata.columns)
    assert pixels.dtype == np.float32
    assert float(pixels.min()) >= 0.0
    assert float(pixels.max()) <= 1.0
    assert float(pixels.std()) > 0.05, "decoded to a flat image"
    assert to_model_input(radiograph).shape == (224, 224, 3)


def test_jpeg_baseline_rgb_is_the_luma_of_the_decoded_colour(tmp_path: Path) -> None:
    """SC_rgb_jpeg_dcmtk.dcm is YBR_FULL JPEG: colour bars whose luma we can check."""
    radiograph = _decode(relabelled_testdata("SC_rgb_jpeg_dcmtk.dcm", tmp_path / "rgb.dcm"))

    assert "YBR_FULL converted to grey (luma)" in radiograph.decisions
    # The sample's top band is pure red (255, 0, 0): BT.601 luma 0.299.
    assert radiograph.pixels[2, 50] == pytest.approx(0.299, abs=0.02)
