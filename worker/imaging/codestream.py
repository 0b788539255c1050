"""The image size a compressed frame claims (JPEG, JPEG-LS, JPEG 2000), read before decoding."""

from __future__ import annotations

JPEG_SOI = b"\xff\xd8"
J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "
# Start-of-frame markers carry the frame size: SOF0-SOF15 except DHT (C4), JPG (C8) and
# DAC (CC), plus JPEG-LS SOF55 (F7).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
# Markers without a length field: TEM, RST0-7, SOI, EOI.
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xDA)})


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) from the frame header of a JPEG-family codestream, or None.

    Only the headers are parsed, so a stream that claims a huge image is caught before
    a decoder allocates memory for it. None means "not recognised", not "invalid".
    """
    if data.startswith(JPEG_SOI):
        return _jpeg_size(data)
    offset = _jp2_codestream_offset(data) if data.startswith(JP2_SIGNATURE) else 0
    if offset is None or data[offset : offset + 4] != J2K_SOC_SIZ:
        return None
    siz = data[offset + 4 : offset + 4 + 22]
    if len(siz) < 22:
        return None
    # SIZ: Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4), big endian.
    width = int.from_bytes(siz[4:8], "big") - int.from_bytes(siz[12:16], "big")
    height = int.from_bytes(siz[8:12], "big") - int.from_bytes(siz[16:20], "big")
    return height, width


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in STANDALONE_MARKERS:
            offset += 2
            continue
        if marker in SOF_MARKERS:
            header = data[offset + 4 : offset + 9]
            if len(header) < 5:
                return None
            return int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:5], "big")
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return None


def _jp2_codestream_offset(data: bytes) -> int | None:
    """Offset of the contiguous codestream inside a JP2 file (the jp2c box), or None."""
    offset = 0
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        box_type = data[offset + 4 : offset + 8]
        header = 8
        if length == 1:  # 64-bit extended length follows the type
            length = int.from_bytes(data[offset + 8 : offset + 16], "big")
            header = 16
        if box_type == b"jp2c":
            return offset + header
        if length < header:  # 0 means "to the end": no jp2c box after it
            return None
        offset += length
    return None
