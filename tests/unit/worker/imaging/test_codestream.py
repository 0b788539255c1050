"""The frame-size readers: what each refuses, and that real streams pass whole."""

from __future__ import annotations

import struct

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import get_frame

from worker.imaging.codestream import (
    CodestreamError,
    FrameGeometry,
    j2k_geometry,
    jpeg_geometry,
    rle_check,
)


def _frame(name: str) -> bytes:
    ds = pydicom.dcmread(str(get_testdata_file(name)))
    return get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames") or 1))


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


SOF0 = _segment(0xC0, struct.pack(">BHHB", 8, 32, 48, 1) + b"\x01\x11\x00")
SOS = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("JPEGLSNearLossless_16.dcm", (1, 16)),
        ("JPGExtended.dcm", (1, 12)),
        ("JPEG-LL.dcm", (1, 16)),
        ("SC_rgb_jpeg_dcmtk.dcm", (3, 8)),
    ],
)
def test_real_jpeg_family_streams_give_their_header_size(
    name: str, expected: tuple[int, int]
) -> None:
    ds = pydicom.dcmread(str(get_testdata_file(name)))
    geometry = jpeg_geometry(_frame(name))

    assert (geometry.rows, geometry.columns) == (ds.Rows, ds.Columns)
    assert (geometry.components, geometry.precision) == expected


def test_entropy_data_is_skipped_to_the_next_marker() -> None:
    """A stuffed 0xFF00 and a restart marker in the scan do not end it; EOI does."""
    stream = b"\xff\xd8" + SOF0 + SOS + b"\x12\xff\x00\x34\xff\xd0\x56" + b"\xff\xd9"

    assert jpeg_geometry(stream) == FrameGeometry(32, 48, 1, 8)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"\x00\x00" + SOF0, "does not start with a JPEG SOI"),
        (b"\xff\xd8" + SOS + SOF0, r"a scan \(SOS\) comes before any frame header"),
        (b"\xff\xd8" + SOF0 + SOS + b"\x12\x34" + SOF0, "second frame header"),
        (b"\xff\xd8" + _segment(0xC5, SOF0[4:]) + SOS, "marker 0xFFC5 is not one"),
        (b"\xff\xd8" + _segment(0xDE, SOF0[4:]), "marker 0xFFDE is not one"),
        (b"\xff\xd8" + _segment(0xC0, b"\x08\x00\x00\x00\x30\x01\x01\x11\x00"), "no usable"),
        (b"\xff\xd8" + SOF0 + SOS + b"\x00" + _segment(0xDC, b"\x10\x00"), "DNL marker"),
        (b"\xff\xd8" + _segment(0xE1, b"\0" * 100), "has no frame header"),
        (b"\xff\xd8\xff\xe1\x00\x01", "impossible length"),
        (b"\xff\xd8\x00" + SOF0, "no JPEG marker at byte 2"),
    ],
)
def test_jpeg_streams_without_one_known_size_are_refused(stream: bytes, reason: str) -> None:
    with pytest.raises(CodestreamError, match=reason):
        jpeg_geometry(stream)


def test_jpeg_ls_scan_data_uses_bit_stuffing() -> None:
    """In JPEG-LS data 0xFF is followed by a byte below 0x80, not by 0x00."""
    sof55 = _segment(0xF7, SOF0[4:])
    stream = b"\xff\xd8" + sof55 + SOS + b"\xff\x7f\xff\x10" + b"\xff\xd9"

    assert jpeg_geometry(stream).rows == 32
    oversize = b"\xff\xd8" + sof55 + _segment(0xF8, b"\x04\x02\x00\x00")
    with pytest.raises(CodestreamError, match="oversize"):
        jpeg_geometry(oversize)


def _siz(x: int, y: int, tile: int, components: int = 1) -> bytes:
    body = struct.pack(">HIIIIIIIIH", 0, x, y, 0, 0, tile, tile, 0, 0, components)
    body += b"\x0b\x01\x01" * components
    return b"\xff\x4f" + _segment(0x51, body)


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


SIGNATURE = _box(b"jP  ", b"\r\n\x87\n")


def test_j2k_size_and_jp2_boxes() -> None:
    assert j2k_geometry(_siz(300, 200, 300)) == FrameGeometry(200, 300, 1, 12, 1)
    ihdr = _box(b"ihdr", struct.pack(">IIHBBBB", 200, 300, 1, 11, 7, 0, 0))
    jp2 = SIGNATURE + _box(b"jp2h", ihdr) + _box(b"free", b"\0" * 70_000)
    assert j2k_geometry(jp2 + _box(b"jp2c", _siz(300, 200, 64))).tiles == 20


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"\x0d\x0a\x87\x0a" + _siz(10, 10, 10), "does not start with a JPEG 2000"),
        (_siz(0, 10, 10), "empty image"),
        (_siz(10, 10, 0), "invalid tile grid"),
        (_siz(10, 10, 10, components=0), "empty image"),
        (_siz(10, 10, 10)[:30], "truncated"),
        (SIGNATURE + _box(b"free", b""), "no codestream box"),
        (SIGNATURE + _box(b"jp2h", _box(b"pclr", b"\0" * 8)), "palette"),
        (SIGNATURE + struct.pack(">I", 4) + b"free", "impossible length"),
        (
            SIGNATURE
            + _box(b"jp2h", _box(b"ihdr", struct.pack(">IIHBBBB", 64, 64, 1, 11, 7, 0, 0)))
            + _box(b"jp2c", _siz(300, 200, 300)),
            "the JP2 image header says 64 x 64 x 1, its codestream 300 x 200 x 1",
        ),
    ],
)
def test_j2k_streams_without_a_bounded_size_are_refused(stream: bytes, reason: str) -> None:
    with pytest.raises(CodestreamError, match=reason):
        j2k_geometry(stream)


def test_too_many_tiles_are_refused() -> None:
    geometry = j2k_geometry(_siz(2000, 2000, 9))

    with pytest.raises(CodestreamError, match="cut into 49,729 tiles"):
        geometry.check_tiles()


def _rle(*segments: bytes) -> bytes:
    offsets, position = [], 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    header = struct.pack(f"<{1 + len(segments)}I", len(segments), *offsets)
    return header.ljust(64, b"\0") + b"".join(segments)


def test_rle_segments_are_counted_not_decoded() -> None:
    exact = b"\x81\x07" * 2  # two replicate runs of 128
    rle_check(_rle(exact), pixels=256, segments=1)
    literal = b"\x02abc"  # a literal run of 3
    rle_check(_rle(literal * 10), pixels=30, segments=1)

    with pytest.raises(CodestreamError, match="has 1 segments, the image needs 2"):
        rle_check(_rle(exact), pixels=256, segments=2)
    with pytest.raises(CodestreamError, match="RLE segment 1 decodes to more than 384"):
        rle_check(_rle(b"\x81\x00" * 10_000), pixels=256, segments=1)
    with pytest.raises(CodestreamError, match="header is truncated"):
        rle_check(b"\x01\x00", pixels=256, segments=1)
