"""What a compressed frame decodes to (JPEG family, JPEG 2000, RLE), read from its headers alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

JPEG_SOI = b"\xff\xd8"
J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
EOI, SOS, DNL, LSE, SOF55 = 0xD9, 0xDA, 0xDC, 0xF8, 0xF7
# Frame headers a DICOM JPEG stream may carry: baseline, extended, progressive and
# lossless, Huffman or arithmetic coded, and JPEG-LS. The hierarchical ones (SOF5-7,
# SOF13-15 with DHP/EXP) are no DICOM transfer syntax: their later frames could decode
# to another size than the first claims, so they are refused with every unknown marker.
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB, SOF55})
# Segments with a length field that carry no frame size: DHT, DAC, DQT, DRI, APPn, COM,
# and the ones checked on their own (SOS, DNL, JPEG-LS preset parameters).
PLAIN_SEGMENTS = frozenset({0xC4, 0xCC, 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE, SOS, DNL, LSE})
# Markers without a length field: TEM, RST0-7.
STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
# The end of an entropy-coded segment: 0xFF followed by a marker code. In DCT and lossless
# JPEG data a 0xFF byte is followed by a stuffed 0x00; in JPEG-LS data by a byte below
# 0x80 (bit stuffing). Restart markers and fill bytes continue the scan.
NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
NEXT_MARKER_LS = re.compile(rb"\xff[\x80-\xcf\xd8-\xfe]")
# openjpeg allocates about 10 kB of state per tile when it reads the SIZ segment, before
# any pixel: 52,851 tiles of 9 x 9 cost 517 MB from a 4 MB file. A radiograph uses one
# tile or a few hundred; 4096 tiles is 40 MB at most.
MAX_J2K_TILES = 4096
# An RLE segment decodes to exactly Rows x Columns bytes (PS3.5 G.3); a run's worth of
# slack tolerates encoders that overrun the last run, as pydicom does with a warning.
RLE_SLACK = 128


class CodestreamError(ValueError):
    """A frame whose decoded size cannot be known from its headers; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class FrameGeometry:
    """What a decoder allocates for a frame: size, samples, bits per sample and tiles."""

    rows: int
    columns: int
    components: int
    precision: int
    tiles: int = 1

    def check_tiles(self) -> None:
        """Refuse a JPEG 2000 tile grid whose decoder state alone is a memory bomb.

        Raises:
            CodestreamError: More than `MAX_J2K_TILES` tiles.
        """
        if self.tiles > MAX_J2K_TILES:
            raise CodestreamError(
                f"the JPEG 2000 image is cut into {self.tiles:,} tiles (the decoder "
                f"allocates state for each; at most {MAX_J2K_TILES:,} are accepted)"
            )

    def describe(self) -> str:
        """The geometry as columns x rows x components."""
        return f"{self.columns} x {self.rows} x {self.components}"


def jpeg_geometry(data: bytes) -> FrameGeometry:
    """The frame a JPEG, JPEG lossless or JPEG-LS codestream decodes to.

    The whole stream is walked, not a prefix: marker segments are jumped by their length
    and entropy-coded data is searched in C for the next marker, so a frame header
    behind megabytes of APP segments is found, as is a second one after the first scan.

    Raises:
        CodestreamError: No single, complete, non-hierarchical frame header was found.
    """
    if not data.startswith(JPEG_SOI):
        raise CodestreamError("the stream does not start with a JPEG SOI marker")
    frame: FrameGeometry | None = None
    pattern = NEXT_MARKER
    offset, end = 2, len(data)
    while offset + 2 <= end:
        if data[offset] != 0xFF:
            raise CodestreamError(f"no JPEG marker at byte {offset}, where one must be")
        marker = data[offset + 1]
        if marker == 0xFF:  # a fill byte before a marker
            offset += 1
            continue
        if marker == EOI:
            break
        if marker in STANDALONE_MARKERS:
            offset += 2
            continue
        if marker not in SOF_MARKERS and marker not in PLAIN_SEGMENTS:
            raise CodestreamError(f"marker 0xFF{marker:02X} is not one a DICOM JPEG stream uses")
        if offset + 4 > end:
            break  # truncated: the decoder reports it, within the size checked
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if length < 2:
            raise CodestreamError(f"marker 0xFF{marker:02X} has an impossible length {length}")
        start, offset = offset + 4, offset + 2 + length
        if offset > end:
            break
        # Only the segments that say something about the size are read; the others
        # (APP, COM, tables) are jumped over without a copy.
        if marker in SOF_MARKERS:
            if frame is not None:
                raise CodestreamError("the stream has a second frame header (SOF)")
            frame = _jpeg_frame(data[start:offset], marker)
            pattern = NEXT_MARKER_LS if marker == SOF55 else NEXT_MARKER
        elif marker == DNL:
            lines = int.from_bytes(data[start : start + 2], "big")
            if frame is None or lines != frame.rows:
                raise CodestreamError(f"a DNL marker redefines the height as {lines} lines")
        elif marker == LSE and data[start : start + 1] == b"\x04":
            raise CodestreamError("a JPEG-LS LSE segment gives oversize image dimensions")
        if marker == SOS:
            if frame is None:
                raise CodestreamError("a scan (SOS) comes before any frame header (SOF)")
            found = pattern.search(data, offset)
            offset = found.start() if found else end
    if frame is None:
        raise CodestreamError("the stream has no frame header (SOF)")
    return frame


def _jpeg_frame(body: bytes, marker: int) -> FrameGeometry:
    # SOF: P(1) Y(2) X(2) Nf(1), then Nf x (C, H/V, Tq).
    if len(body) < 6:
        raise CodestreamError("the frame header (SOF) is truncated")
    precision, rows, columns, components = (
        body[0],
        int.from_bytes(body[1:3], "big"),
        int.from_bytes(body[3:5], "big"),
        body[5],
    )
    if rows == 0 or columns == 0 or components == 0:
        # Zero lines means "a DNL marker gives the height after the first scan", which
        # decoders do not bound; zero columns or components is no image at all.
        raise CodestreamError(
            f"the frame header (SOF{marker - 0xC0 if marker != SOF55 else 55}) gives "
            f"{columns} x {rows} x {components}, no usable image size"
        )
    if len(body) < 6 + 3 * components:
        raise CodestreamError("the frame header (SOF) is truncated")
    return FrameGeometry(rows, columns, components, precision)


def j2k_geometry(data: bytes) -> FrameGeometry:
    """The image a JPEG 2000 codestream (or a JP2 file wrapping one) decodes to.

    The JP2 boxes are walked by their lengths to the codestream box (jp2c), wherever it
    is; a palette box (pclr, which makes up to 256 components out of one) is refused,
    as is an image header (ihdr) that disagrees with the codestream.

    Raises:
        CodestreamError: The size cannot be read or would not be bounded by it.
    """
    declared: FrameGeometry | None = None
    offset = 0
    if data.startswith(JP2_SIGNATURE):
        offset, declared = _jp2_codestream(data)
    if data[offset : offset + 4] != J2K_SOC_SIZ:
        raise CodestreamError("the stream does not start with a JPEG 2000 SOC and SIZ marker")
    geometry = _siz(data[offset + 4 : offset + 4 + 2 + 38 + 3 * 16384])
    if declared is not None and (declared.rows, declared.columns, declared.components) != (
        geometry.rows,
        geometry.columns,
        geometry.components,
    ):
        raise CodestreamError(
            f"the JP2 image header says {declared.describe()}, its codestream {geometry.describe()}"
        )
    return geometry


def _siz(siz: bytes) -> FrameGeometry:
    # SIZ: Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each)
    # Csiz(2), then Csiz x (Ssiz, XRsiz, YRsiz), big endian.
    if len(siz) < 38:
        raise CodestreamError("the JPEG 2000 SIZ segment is truncated")
    x, y, x_off, y_off, tile_x, tile_y, tile_x_off, tile_y_off = (
        int.from_bytes(siz[start : start + 4], "big") for start in range(4, 36, 4)
    )
    components = int.from_bytes(siz[36:38], "big")
    if x <= x_off or y <= y_off or components == 0:
        raise CodestreamError(
            f"the JPEG 2000 SIZ segment gives an empty image ({x - x_off} x {y - y_off} x "
            f"{components})"
        )
    if tile_x == 0 or tile_y == 0 or tile_x_off > x_off or tile_y_off > y_off:
        raise CodestreamError("the JPEG 2000 SIZ segment gives an invalid tile grid")
    tiles = -(-(x - tile_x_off) // tile_x) * -(-(y - tile_y_off) // tile_y)
    parameters = siz[38 : 38 + 3 * components]
    if len(parameters) < 3 * components:
        raise CodestreamError("the JPEG 2000 SIZ segment is truncated")
    if 0 in parameters[1::3] or 0 in parameters[2::3]:
        raise CodestreamError("a JPEG 2000 component has a subsampling factor of 0")
    precision = max((parameters[index] & 0x7F) + 1 for index in range(0, len(parameters), 3))
    return FrameGeometry(y - y_off, x - x_off, components, precision, tiles)


def _jp2_codestream(data: bytes) -> tuple[int, FrameGeometry | None]:
    """Offset of the codestream in a JP2 file, and what its image header (ihdr) says."""
    declared: FrameGeometry | None = None
    for box, start, stop in _boxes(data, 0, len(data)):
        if box == b"jp2c":
            return start, declared
        if box == b"jp2h":
            for child, child_start, child_stop in _boxes(data, start, stop):
                if child == b"pclr":
                    raise CodestreamError("the JP2 file has a palette (pclr box)")
                if child == b"ihdr" and child_stop - child_start >= 11:
                    ihdr = data[child_start:child_stop]
                    declared = FrameGeometry(
                        rows=int.from_bytes(ihdr[0:4], "big"),
                        columns=int.from_bytes(ihdr[4:8], "big"),
                        components=int.from_bytes(ihdr[8:10], "big"),
                        precision=(ihdr[10] & 0x7F) + 1,
                    )
    raise CodestreamError("the JP2 file has no codestream box (jp2c)")


def _boxes(data: bytes, offset: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, content start, content end) of the JP2 boxes in data[offset:end]."""
    boxes = []
    while offset + 8 <= end:
        length = int.from_bytes(data[offset : offset + 4], "big")
        box = data[offset + 4 : offset + 8]
        header = 8
        if length == 1:  # a 64-bit extended length follows the type
            length = int.from_bytes(data[offset + 8 : offset + 16], "big")
            header = 16
        elif length == 0:  # the box runs to the end
            length = end - offset
        if length < header or (offset + length > end and box != b"jp2c"):
            raise CodestreamError(f"the JP2 box {box!r} has an impossible length ({length})")
        boxes.append((box, offset + header, min(offset + length, end)))
        if box == b"jp2c":
            break
        offset += length
    return boxes


def rle_check(data: bytes, *, pixels: int, segments: int) -> None:
    """Check that an RLE frame holds `segments` segments of `pixels` bytes each.

    pydicom decodes each segment whole before comparing its length, and one run of two
    bytes can stand for 128, so a segment could decode to 64 times its size. Here each
    segment's decoded length is counted (no bytes are produced) and the count stops as
    soon as it passes `pixels`.

    Raises:
        CodestreamError: Wrong number of segments, or a segment that decodes longer.
    """
    if len(data) < 64:
        raise CodestreamError("the RLE header is truncated")
    count = int.from_bytes(data[:4], "little")
    if count != segments:
        raise CodestreamError(f"the RLE header has {count} segments, the image needs {segments}")
    offsets = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "little") for i in range(count)]
    offsets.append(len(data))
    limit = pixels + RLE_SLACK
    for index in range(count):
        length = _rle_decoded_length(data, offsets[index], offsets[index + 1], limit)
        if length > limit:
            raise CodestreamError(
                f"RLE segment {index + 1} decodes to more than {limit:,} bytes, "
                f"the image needs {pixels:,}"
            )


def _rle_decoded_length(data: bytes, start: int, stop: int, limit: int) -> int:
    """Bytes the PackBits segment data[start:stop] decodes to, counted up to past `limit`.

    Mirrors pydicom's decoder: a literal run is cut short by the end of the segment, a
    replicate run with no byte left produces nothing, header 128 is a no-op.
    """
    total, position = 0, start
    stop = min(stop, len(data))
    while position < stop and total <= limit:
        header = data[position]
        position += 1
        if header > 128:
            if position < stop:
                total += 257 - header
            position += 1
        elif header < 128:
            total += min(header + 1, stop - position)
            position += header + 1
    return total
