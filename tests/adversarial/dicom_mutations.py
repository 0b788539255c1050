"""Hostile variants of the real DICOM files: bombs, header lies and measured decodes."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

KIB = 1024
# The APP segment, JP2 box and pixel-data sizes the bombs use: past the 64 KiB
# the old decoder parsed of a fragment.
PADDING = 70 * KIB
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB, 0xF7})


def read_dataset(path: Path) -> Dataset:
    """The real file, parsed."""
    return pydicom.dcmread(path)


def first_frame(ds: Dataset) -> bytes:
    """The encoded frame of a single-frame compressed dataset."""
    return get_frame(ds.PixelData, 0, number_of_frames=1)


def to_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file, written without validating its values."""
    buffer = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def with_frame(ds: Dataset, frame: bytes, **attributes: Any) -> bytes:
    """`ds` with `frame` as its only (encapsulated) frame and `attributes` set."""
    ds.PixelData = encapsulate([frame], has_bot=False)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def app_segments(total: int) -> bytes:
    """APP1 segments of about `total` bytes (each at most 64 KiB, as a segment must be)."""
    segments = []
    while total > 0:
        body = min(total, 65533 - 2)
        segments.append(b"\xff\xe1" + struct.pack(">H", body + 2) + b"\0" * body)
        total -= body + 4
    return b"".join(segments)


def jpeg_with_sof(frame: bytes, *, columns: int, rows: int, padding: int = PADDING) -> bytes:
    """A JPEG frame with `padding` bytes of APP segments after SOI and its SOF resized."""
    offset = 2
    while frame[offset + 1] not in SOF_MARKERS:
        offset += 2 + struct.unpack(">H", frame[offset + 2 : offset + 4])[0]
    patched = bytearray(frame)
    patched[offset + 5 : offset + 9] = struct.pack(">HH", rows, columns)
    return bytes(patched[:2]) + app_segments(padding) + bytes(patched[2:])


def jp2_wrapped(codestream: bytes, *, padding: int = PADDING) -> bytes:
    """A JP2 file around `codestream`, with a `free` box of `padding` bytes before jp2c.

    The image header box (ihdr) tells the truth about the codestream's size.
    """
    siz = codestream[4 : 4 + 40]
    x, y, x_off, y_off = struct.unpack(">IIII", siz[4:20])
    components = struct.unpack(">H", siz[36:38])[0]
    precision = siz[38]

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    ihdr = struct.pack(">IIHBBBB", y - y_off, x - x_off, components, precision, 7, 0, 0)
    colr = b"\x01\x00\x00" + struct.pack(">I", 17)  # enumerated greyscale
    return b"".join(
        [
            box(b"jP  ", b"\r\n\x87\n"),
            box(b"ftyp", b"jp2 " + b"\0\0\0\0" + b"jp2 "),
            box(b"jp2h", box(b"ihdr", ihdr) + box(b"colr", colr)),
            box(b"free", b"\0" * padding),
            box(b"jp2c", codestream),
        ]
    )


def j2k_with_siz(
    codestream: bytes,
    *,
    columns: int | None = None,
    rows: int | None = None,
    tile: int | None = None,
) -> bytes:
    """The codestream with its SIZ image size and/or tile size changed."""
    patched = bytearray(codestream)
    if columns is not None and rows is not None:
        patched[8:16] = struct.pack(">II", columns, rows)
    if tile is not None:
        patched[24:32] = struct.pack(">II", tile, tile)
    return bytes(patched)


def rle_replicating(*, segment_bytes: int) -> bytes:
    """One RLE segment of replicate runs: two bytes of it decode to 128."""
    runs = b"\x81\x80" * (segment_bytes // 2)
    return struct.pack("<16I", 1, 64, *([0] * 14)) + runs


@dataclass(frozen=True, slots=True)
class Measured:
    """What a call returned or raised, and the peak of Python memory it allocated."""

    outcome: object
    peak: int


def measured(call: Callable[[], object]) -> Measured:
    """Run `call` under tracemalloc; the exception it raises is the outcome."""
    tracemalloc.start()
    try:
        try:
            outcome: object = call()
        except Exception as exc:  # noqa: BLE001 (the outcome is what is examined)
            outcome = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Measured(outcome, peak)


# --- mutations for the property-based test -----------------------------------------
# Header values a hostile or broken writer could put there: each keyword's edge cases
# (zero, one, the type's limits, values for another bit depth, non-numbers) and None,
# which deletes the element.
HEADER_VALUES: dict[str, list[object]] = {
    "Rows": [None, 0, 1, 2, 64, 211, 1024, 4096, 65535],
    "Columns": [None, 0, 1, 3, 64, 169, 1024, 12000, 65535],
    "BitsAllocated": [None, 0, 1, 8, 12, 16, 32, 64, 65535],
    "BitsStored": [None, 0, 1, 7, 8, 12, 15, 16, 17, 255],
    "HighBit": [None, 0, 7, 11, 15, 31],
    "SamplesPerPixel": [None, 0, 1, 2, 3, 4, 255, 65535],
    "PixelRepresentation": [None, 0, 1, 2],
    "PlanarConfiguration": [None, 0, 1, 7],
    "PhotometricInterpretation": [
        None,
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "PALETTE COLOR",
        "MONOCHROME3",
        "",
    ],
    "RescaleSlope": [None, "0", "1", "-1", "1e-30", "1e38", "nan", "inf", "-inf", "2"],
    "RescaleIntercept": [None, "0", "-1024", "1e38", "-1e38", "nan", "inf", "65536"],
    "WindowCenter": [None, "0", "128", "-5000", "40000", "nan", "inf", "1e38", ""],
    "WindowWidth": [None, "0", "1", "-1", "256", "4096", "1e38", "nan", "inf", ""],
    "NumberOfFrames": [None, "0", "1", "2", "-1", "1000", "2147483647"],
    "PresentationLUTShape": [None, "INVERSE", "IDENTITY", "BOGUS"],
    "BodyPartExamined": [None, "CHEST", "HIP", ""],
    "Modality": [None, "CR", "DX", "CT", "OT", ""],
}
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.100",  # MPEG-2: no decoder
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.3.4",
    "",
]


@dataclass(frozen=True, slots=True)
class Edit:
    """One byte-level edit at `position` (taken modulo the length edited).

    kind: "flip" xors `value` into one byte, "set" writes `value`, "truncate" cuts at
    `position`, "insert" puts `count` copies of `value` there, "delete" removes `count`.
    """

    kind: str
    position: int
    value: int = 0xFF
    count: int = 1


def apply_edits(data: bytes, edits: list[Edit]) -> bytes:
    """`data` with every edit applied in turn."""
    result = bytearray(data)
    for edit in edits:
        if not result:
            break
        at = edit.position % len(result)
        if edit.kind == "flip":
            result[at] ^= edit.value or 1
        elif edit.kind == "set":
            result[at] = edit.value
        elif edit.kind == "truncate":
            del result[at:]
        elif edit.kind == "insert":
            result[at:at] = bytes([edit.value]) * edit.count
        elif edit.kind == "delete":
            del result[at : at + edit.count]
    return bytes(result)


def mutate_header(data: bytes, changes: list[tuple[str, object]]) -> bytes:
    """The file with each (keyword, value) set, or deleted where the value is None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(data))
        for keyword, value in changes:
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
    return to_bytes(ds)


def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The file with another Transfer Syntax UID in its meta, its dataset bytes unchanged.

    That is a lie about the encoding: a writer that re-encoded the dataset would not be.
    """
    meta_length = int.from_bytes(data[140:144], "little")
    meta_end = 144 + meta_length
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = pydicom.dcmread(BytesIO(data), stop_before_pixels=True).file_meta
        new_meta = FileMetaDataset(meta)
        new_meta.TransferSyntaxUID = uid
        buffer = DicomBytesIO()
        write_file_meta_info(buffer, new_meta, enforce_standard=False)
    return data[:132] + buffer.getvalue() + data[meta_end:]


def mutate_pixel_data(data: bytes, edits: list[Edit]) -> bytes:
    """The file with its (first) frame or native pixel data edited, the rest unchanged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(data))
        element = ds["PixelData"]
        if element.is_undefined_length:
            # An item holds at least two bytes: an emptied frame becomes two zeros.
            frame = apply_edits(first_frame(ds), edits).ljust(2, b"\0")
            ds.PixelData = encapsulate([frame], has_bot=False)
        else:
            ds.PixelData = apply_edits(ds.PixelData, edits)
    return to_bytes(ds)


def derived_seeds(dicom_dir: Path) -> dict[str, bytes]:
    """Small files cut from the real ones, for codecs the real files have only big.

    A 160 x 192 crop of the real DX chest re-encoded as JPEG 2000 and as RLE, and the
    real lateral thorax written as a Deflated dataset: cheap to decode many times.
    """
    seeds: dict[str, bytes] = {}
    for name, syntax in (("crop_j2k.dcm", JPEG2000Lossless), ("crop_rle.dcm", RLELossless)):
        ds = read_dataset(dicom_dir / "dx_chest_pa_mono1_inverse_plut_j2k.dcm")
        crop = ds.pixel_array[900:1060, 900:1092].copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = crop.shape
        ds.PixelData = crop.tobytes()
        ds["PixelData"].is_undefined_length = False
        ds.compress(syntax)
        seeds[name] = to_bytes(ds)
    ds = read_dataset(dicom_dir / "dx_thorax_lateral_animal.dcm")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    seeds["deflated.dcm"] = to_bytes(ds)
    return seeds
