"""Decode a JPEG or PNG radiograph: caps first, reduced-size JPEG decode, EXIF orientation."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.ImageFile import ImageFile

from worker.imaging.errors import TooLarge, UnreadableScan, brief
from worker.imaging.radiograph import Radiograph, ScanFormat, ScanMetadata

if TYPE_CHECKING:
    from pathlib import Path

    from worker.imaging.options import DecodeOptions

PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG"}
# What Pillow raises on truncated or malformed files (a truncated JPEG is an OSError,
# which is why the file is read into memory first: a real I/O error never gets here).
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
)
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
GREY_MODES = ("L", "LA", "1", *HIGH_BIT_DEPTH_MODES)
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
EXIF_ORIENTATION_TAG = 0x0112
REEXPORT = "the file is damaged or incomplete; send it again or re-export it"


def decode_raster(data: bytes, path: Path, kind: ScanFormat, options: DecodeOptions) -> Radiograph:
    """Decode JPEG or PNG `data` (read from `path`) into a display-ready radiograph.

    Grey images are used as they are (a JPEG or PNG is already display-ready); colour
    images become their luma. Big JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg
    (draft mode) when that still leaves at least `options.draft_size` pixels per side.

    Raises:
        TooLarge: The image claims more pixels than `options.max_pixels`.
        UnreadableScan: The file is corrupt or truncated.
    """
    decisions: list[str] = []
    with _open(data, path, kind, options) as image:
        # Pillow has parsed the whole header (every JPEG segment up to the first scan,
        # the PNG IHDR) but decoded nothing: the size and bands known here are what
        # load() allocates, so the cap counts samples as for DICOM.
        mode, full_size = image.mode, image.size
        samples = len(image.getbands())
        if full_size[0] * full_size[1] * samples > options.max_pixels:
            claim = f"{full_size[0]} x {full_size[1]} pixels"
            if samples > 1:
                claim += f" x {samples} samples"
            raise _too_large(path, options, claim)
        try:
            orientation = _orientation(image)
            if kind == "jpeg" and options.draft_size is not None:
                _draft(image, options.draft_size, decisions)
            image.load()
            upright: Image.Image = image
            if orientation != 1:
                upright = ImageOps.exif_transpose(image)
                decisions.append(f"EXIF orientation {orientation} applied")
            pixels = _grey(upright, decisions)
        except Image.DecompressionBombError as exc:
            raise _too_large(path, options, f"{exc}") from exc
        except DECODE_ERRORS as exc:
            raise UnreadableScan(
                path,
                f"its {kind.upper()} image data could not be decoded ({brief(exc)})",
                REEXPORT,
            ) from exc
    metadata = _metadata(kind, mode, full_size, orientation)
    return Radiograph(pixels=pixels, metadata=metadata, decisions=tuple(decisions))


def read_raster_metadata(
    data: bytes, path: Path, kind: ScanFormat, options: DecodeOptions
) -> ScanMetadata:
    """The size and colour type of a JPEG or PNG, from its header only.

    Raises:
        UnreadableScan: The header cannot be parsed.
        TooLarge: Pillow's own decompression-bomb guard refused it.
    """
    with _open(data, path, kind, options) as image:
        try:
            orientation = _orientation(image)
        except DECODE_ERRORS as exc:
            raise UnreadableScan(
                path, f"has unreadable EXIF data ({brief(exc)})", REEXPORT
            ) from exc
        # The pixel cap is a decoding limit; the header facts are still worth showing.
        return _metadata(kind, image.mode, image.size, orientation)


def _open(data: bytes, path: Path, kind: ScanFormat, options: DecodeOptions) -> ImageFile:
    """Open the image lazily: only the header is parsed until `load()`."""
    try:
        image = Image.open(BytesIO(data), formats=[PILLOW_FORMATS[kind]])
    except Image.DecompressionBombError as exc:
        raise _too_large(path, options, f"{exc}") from exc
    except DECODE_ERRORS as exc:
        raise UnreadableScan(
            path, f"is not a readable {kind.upper()} file ({brief(exc)})", REEXPORT
        ) from exc
    return image


def _orientation(image: Image.Image) -> int:
    return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))


def _metadata(kind: ScanFormat, mode: str, size: tuple[int, int], orientation: int) -> ScanMetadata:
    """Facts of the full-size image as displayed (EXIF orientation applied)."""
    width, height = size
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ScanMetadata(
        format=kind,
        photometric_interpretation=_photometric(mode),
        bits_stored=16 if mode in HIGH_BIT_DEPTH_MODES else 8,
        rows=height,
        columns=width,
    )


def _draft(image: Image.Image, draft_size: int, decisions: list[str]) -> None:
    """Ask libjpeg for a grey image at the smallest 1/2^k scale that keeps `draft_size`."""
    full = image.size
    # Only a YCbCr (or grey) JPEG can be decoded straight to its luma channel.
    mode = "L" if image.mode in ("L", "RGB") else image.mode
    original_mode = image.mode
    image.draft(mode, (draft_size, draft_size))
    if image.mode != original_mode:
        decisions.append(f"{original_mode} JPEG decoded as its luma (Y) channel")
    if image.size != full:
        decisions.append(
            f"JPEG draft decode {full[0]}x{full[1]} -> {image.size[0]}x{image.size[1]}"
        )


def _grey(image: Image.Image, decisions: list[str]) -> npt.NDArray[np.float32]:
    """The image as (H, W) float32 in [0, 1]."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image).astype(np.float32)
        if values.size and float(values.min()) < 0:
            decisions.append("negative pixel values clipped to 0")
            np.clip(values, 0, None, out=values)
        # 12-bit detector data is often stored in a 16-bit PNG: scale by the detector
        # depth the content uses (10, 12, 14 or 16 bits: the bits of its peak, rounded up
        # to even), not by 65535, or the image shows almost black.
        peak = int(values.max()) if values.size else 0
        bits = max(8, peak.bit_length() + peak.bit_length() % 2)
        decisions.append(f"16-bit image scaled by {2**bits - 1} ({bits}-bit content)")
        return np.ascontiguousarray(values / np.float32(2**bits - 1), dtype=np.float32)
    if image.mode not in GREY_MODES:
        decisions.append(f"{image.mode} converted to grey (luma)")
    grey = image.convert("L") if image.mode != "L" else image
    return np.asarray(grey, dtype=np.float32) / np.float32(255.0)


def _photometric(mode: str) -> str:
    if mode in GREY_MODES:
        return "MONOCHROME2"
    if mode in ("P", "PA"):
        return "PALETTE COLOR"
    return "RGB"


def _too_large(path: Path, options: DecodeOptions, claim: str) -> TooLarge:
    return TooLarge(
        path,
        f"the image claims more pixels than the cap of {options.max_pixels:,} ({claim})",
        "raise CXR_MAX_PIXELS if such images are legitimate",
    )
