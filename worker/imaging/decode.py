"""`decode_path`: one entry point from a file to a `Radiograph`, whatever its format."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from worker.imaging.dicom import decode_dicom, read_dicom_metadata
from worker.imaging.errors import NoUsableContent, TooLarge, TransientError, UnreadableScan
from worker.imaging.options import DecodeOptions
from worker.imaging.raster import decode_raster, read_raster_metadata
from worker.imaging.voi import content_problem

if TYPE_CHECKING:
    from pathlib import Path

    from worker.imaging.radiograph import Radiograph, ScanFormat, ScanMetadata

logger = logging.getLogger(__name__)

DEFAULT_OPTIONS = DecodeOptions()
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# First tag groups of a DICOM dataset written without preamble: file meta (0002) or
# identifying attributes (0008), little or big endian.
BARE_DATASET_GROUPS = (0x0002, 0x0008)


def decode_path(path: Path, options: DecodeOptions = DEFAULT_OPTIONS) -> Radiograph:
    """Decode a DICOM, JPEG or PNG radiograph file into display-ready pixels and metadata.

    The format is sniffed from the content, not the extension. The file-size cap is
    checked before reading, and the pixel cap (rows x columns x samples x frames) against
    both the header and the compressed stream's own size claim before decoding. A
    decoded image without usable content (non-finite or flat) gets no verdict.

    Raises:
        ScreeningError: A typed subclass (`UnreadableScan`, `NoPixelData`, `MultiFrame`,
            `NotARadiograph`, `NotAChest`, `TooLarge`, `NoUsableContent`) naming the file,
            the problem and what to do; its `status` is what the worker records.
        TransientError: An I/O failure worth retrying.
    """
    return decode_bytes(_read_capped(path, options), path, options)


def decode_bytes(data: bytes, path: Path, options: DecodeOptions = DEFAULT_OPTIONS) -> Radiograph:
    """Decode the content `data` of the file `path` (read by the caller, who hashed it).

    The screening worker reads a file once, checks its SHA-256 against the scan's row and
    decodes those very bytes: a file swapped after the read cannot change the verdict.
    `path` only names the file in messages.

    Raises:
        ScreeningError, TransientError: as `decode_path`.
    """
    if len(data) > options.max_file_bytes:
        raise _too_large(path, len(data), options)
    if not data:
        raise UnreadableScan(path, "is empty", "send the file again once it is fully copied")
    kind = _sniff_or_fail(data, path)
    if kind == "dicom":
        radiograph = decode_dicom(data, path, options)
    else:
        radiograph = decode_raster(data, path, kind, options)
    problem = content_problem(radiograph.pixels)
    if problem is not None:
        raise NoUsableContent(
            path,
            f"{problem}, so there is no image to screen",
            "no verdict is given on it; check the export (a blank or saturated image, or a "
            "wrong rescale or window in its header) and send the original radiograph",
        )
    logger.debug("decoded %s: %s", path.name, "; ".join(radiograph.decisions))
    return radiograph


def read_metadata(path: Path, options: DecodeOptions = DEFAULT_OPTIONS) -> ScanMetadata:
    """The header facts of a scan without scope checks or pixel decoding.

    For recording what a rejected scan was (its modality, body part, view) and for
    `cxr-screen inspect`. The file-size cap still applies.

    Raises:
        UnreadableScan: The file or its header cannot be read.
        TooLarge: The file is over the size cap.
        TransientError: An I/O failure worth retrying.
    """
    return read_metadata_bytes(_read_capped(path, options), path, options)


def read_metadata_bytes(
    data: bytes, path: Path, options: DecodeOptions = DEFAULT_OPTIONS
) -> ScanMetadata:
    """The header facts of the content `data` of `path` (see `read_metadata`)."""
    if len(data) > options.max_file_bytes:
        raise _too_large(path, len(data), options)
    kind = _sniff_or_fail(data, path)
    if kind == "dicom":
        return read_dicom_metadata(data, path, options)
    return read_raster_metadata(data, path, kind, options)


def sniff_format(data: bytes) -> ScanFormat | None:
    """Which decoder `data` needs, from its first bytes; None when it is none of ours."""
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    if len(data) >= 8 and (
        int.from_bytes(data[:2], "little") in BARE_DATASET_GROUPS
        or int.from_bytes(data[:2], "big") in BARE_DATASET_GROUPS
    ):
        return "dicom"
    return None


def _sniff_or_fail(data: bytes, path: Path) -> ScanFormat:
    kind = sniff_format(data)
    if kind is None:
        raise UnreadableScan(
            path,
            "is not a DICOM, JPEG or PNG file (unrecognised content)",
            "send chest radiographs as DICOM, JPEG or PNG",
        )
    return kind


def _read_capped(path: Path, options: DecodeOptions) -> bytes:
    """The whole file, refusing one over the size cap before reading it.

    Reading into memory first separates the two kinds of OSError: one here is I/O (the
    share, the disk), while Pillow's "image file is truncated" later is a broken file.
    """
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UnreadableScan(path, "is not a regular file", "drop files, not folders")
        if size > options.max_file_bytes:
            raise _too_large(path, size, options)
        with path.open("rb") as handle:
            # One byte more than stat said: a file still being copied shows itself.
            data = handle.read(size + 1)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UnreadableScan(
            path,
            "does not exist (moved or deleted before it was screened)",
            "drop it into the inbox again if it should be screened",
        ) from exc
    except IsADirectoryError as exc:
        raise UnreadableScan(path, "is not a regular file", "drop files, not folders") from exc
    except OSError as exc:
        raise TransientError(
            path,
            f"could not be read ({exc.strerror or exc})",
            "the worker retries; if this persists check the share, disk and permissions",
        ) from exc
    if len(data) > size:
        raise TransientError(
            path,
            "grew while being read (still being copied?)",
            "the worker retries once the file is complete",
        )
    if not data:
        raise UnreadableScan(path, "is empty", "send the file again once it is fully copied")
    return data


def _too_large(path: Path, size: int, options: DecodeOptions) -> TooLarge:
    return TooLarge(
        path,
        f"is {size / 1024**2:.1f} MB, over the cap of {options.max_file_bytes / 1024**2:g} MB",
        "raise CXR_MAX_FILE_MB if such files are legitimate",
    )
