"""Build small DICOM, JPEG and PNG radiographs for the decoder tests (written to tmp_path)."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

ROWS, COLUMNS = 60, 80
PATIENT_NAME = "Doe^Jane"


def phantom(
    low: float, high: float, dtype: npt.DTypeLike, rows: int = ROWS, columns: int = COLUMNS
) -> npt.NDArray[Any]:
    """A crude chest as display values: grey body, two dark lungs, a bright central band.

    `low` is the darkest (air in the lungs) and `high` the brightest (spine) stored value,
    so a decoder that shows it right has centre > lungs.
    """
    y, x = np.mgrid[0:rows, 0:columns]
    image = np.full((rows, columns), low + 0.55 * (high - low))
    for centre_x in (0.27 * columns, 0.73 * columns):
        lung = ((x - centre_x) / (0.17 * columns)) ** 2 + ((y - rows / 2) / (0.33 * rows)) ** 2
        image[lung < 1] = low + 0.1 * (high - low)
    image[:, int(0.44 * columns) : int(0.56 * columns)] = high
    image[0, 0] = low  # the full range occurs at least once
    result: npt.NDArray[Any] = np.rint(image).astype(dtype)
    return result


def orientation_margin(pixels: npt.NDArray[np.float32]) -> float:
    """Centre band mean minus the brighter lung band mean, on rows 30-70 %.

    Bands: centre 45-55 % of the width, lungs 20-35 % and 65-80 %. Positive means bone
    is white and air dark, i.e. MONOCHROME1 was inverted and the window is right.
    """
    height, width = pixels.shape
    rows = slice(int(0.3 * height), int(0.7 * height))

    def band(start: float, stop: float) -> float:
        return float(pixels[rows, int(start * width) : int(stop * width)].mean())

    return band(0.45, 0.55) - max(band(0.20, 0.35), band(0.65, 0.80))


def dicom_dataset(
    pixels: npt.NDArray[Any],
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    modality: str | None = "DX",
    body_part: str | None = "CHEST",
    view: str | None = "PA",
    sop_class: str = DigitalXRayImageStorageForPresentation,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attributes: object,
) -> Dataset:
    """A single-frame radiograph dataset with file meta, uncompressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = "PID-0001"
    if modality is not None:
        ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if view is not None:
        ds.ViewPosition = view
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[-1]
    ds.PhotometricInterpretation = photometric
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    swapped = UID(transfer_syntax) == ExplicitVRBigEndian and pixels.dtype.itemsize > 1
    ds.PixelData = (pixels.byteswap() if swapped else pixels).tobytes()
    return ds


def write_dicom(ds: Dataset, path: Path, *, compress: str | None = None, **encoder: object) -> Path:
    """Save `ds` as a DICOM Part 10 file, compressing it with pydicom's encoders first."""
    if compress is not None:
        ds.compress(UID(compress), **encoder)  # type: ignore[arg-type]
    ds.save_as(path, enforce_file_format=True)
    return path


def write_bare_dataset(ds: Dataset, path: Path) -> Path:
    """Write only the dataset: no preamble, no DICM prefix, no file meta (ACR-NEMA style)."""
    del ds.file_meta
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return path


def relabelled_testdata(name: str, path: Path, **attributes: object) -> Path:
    """A pydicom-data sample with its scope attributes set to a chest DX, saved to `path`.

    The samples cover codecs no installed encoder can write (JPEG baseline, extended,
    lossless, JPEG-LS) but are MR, NM or US images; their pixels are what matters here.
    """
    source = get_testdata_file(name)
    assert source is not None, f"pydicom-data lacks {name}"
    ds = pydicom.dcmread(source)
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_jpeg(pixels: npt.NDArray[Any], path: Path, **save: object) -> Path:
    """Save grey (H, W) or RGB (H, W, 3) uint8 pixels as a JPEG."""
    Image.fromarray(pixels).save(path, format="JPEG", **save)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims `width` x `height` (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def jpeg_bytes(pixels: npt.NDArray[np.uint8], quality: int = 95) -> bytes:
    """JPEG-encoded bytes of grey or RGB uint8 pixels."""
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
