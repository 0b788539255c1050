"""Decode a DICOM radiograph: read carefully, check scope and caps, then pixels to display."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from worker.errors import (
    MultiFrame,
    NoPixelData,
    NotAChest,
    NotARadiograph,
    TooLarge,
    UnreadableScan,
    brief,
)
from worker.imaging.codestream import codestream_size
from worker.imaging.pseudonym import patient_ref
from worker.imaging.radiograph import Radiograph, ScanMetadata
from worker.imaging.voi import to_display

if TYPE_CHECKING:
    from pathlib import Path

    from worker.imaging.options import DecodeOptions


RADIOGRAPH_MODALITIES = ("CR", "DX", "RG")  # RG: radiographic imaging (digitised film)
RADIOGRAPH_SOP_CLASSES = frozenset(
    {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
    }
)
# Secondary Capture: single-frame, and the multi-frame bit, grey byte/word and true colour.
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.7", *(f"1.2.840.10008.5.1.4.1.1.7.{n}" for n in range(1, 5))}
)
GENERIC_MODALITIES = (None, "OT")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LLD", "RLD", "LAT")
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601

# What pydicom and its pixel plugins raise on malformed or truncated input. Each is
# turned into a typed UnreadableScan that names the file; nothing is swallowed.
READ_ERRORS = (
    InvalidDicomError,
    BytesLengthException,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    NotImplementedError,
    struct.error,
    zlib.error,
)
DECODE_ERRORS = (*READ_ERRORS, RuntimeError)
HEADER_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)
IDENTIFYING_KEYWORDS = ("SOPClassUID", "Modality", "PixelData", "Rows")
REEXPORT = "the file is damaged or incomplete; send it again or re-export it from the PACS"


def decode_dicom(data: bytes, path: Path, options: DecodeOptions) -> Radiograph:
    """Decode the DICOM file `data` (read from `path`) into a display-ready radiograph.

    Raises:
        ScreeningError: A typed subclass saying why the scan is out of scope or broken.
    """
    decisions: list[str] = []
    ds = _read_dataset(data, path, options, decisions)
    _ensure_transfer_syntax(ds, path, decisions)
    metadata = _metadata(ds, path, options)
    try:
        _check_scope(ds, metadata, path, options, decisions)
        _check_codestream(ds, path, options)
        array = _decode_pixels(ds, path)
        pixels = _display(array, ds, metadata, path, decisions)
    except HEADER_ERRORS as exc:
        # pydicom converts values lazily, so a malformed element (Number of Frames
        # "abc", a Rescale Slope that is not a number) only fails when it is used.
        raise UnreadableScan(
            path, f"has a malformed header value ({brief(exc)})", REEXPORT
        ) from exc
    return Radiograph(pixels=pixels, metadata=metadata, decisions=tuple(decisions))


def read_dicom_metadata(data: bytes, path: Path, options: DecodeOptions) -> ScanMetadata:
    """The header facts of a DICOM file, without scope checks or pixel decoding.

    Raises:
        UnreadableScan: The dataset cannot be parsed.
    """
    decisions: list[str] = []
    ds = _read_dataset(data, path, options, decisions)
    _ensure_transfer_syntax(ds, path, decisions)
    return _metadata(ds, path, options)


def _read_dataset(data: bytes, path: Path, options: DecodeOptions, decisions: list[str]) -> Dataset:
    has_preamble = data[128:132] == b"DICM"
    if has_preamble:
        _guard_deflate(data, path, options)
    else:
        # Old ACR-NEMA style files and some gateways' output start with the dataset
        # itself; the caller sniffed a plausible first tag before sending it here.
        decisions.append("no preamble or file meta: read as a bare dataset")
    try:
        ds = pydicom.dcmread(BytesIO(data), force=not has_preamble)
    except READ_ERRORS as exc:
        raise UnreadableScan(
            path, f"is not a readable DICOM file ({brief(exc)})", REEXPORT
        ) from exc
    if not any(keyword in ds for keyword in IDENTIFYING_KEYWORDS):
        if has_preamble:
            # pydicom returns an empty dataset, with only a warning, when the data ends
            # inside an undefined-length element: a truncated file.
            raise UnreadableScan(
                path, "is a DICOM file with no readable dataset (truncated or corrupt)", REEXPORT
            )
        raise UnreadableScan(
            path,
            "is not a DICOM, JPEG or PNG file (no preamble and no image attributes)",
            "send chest radiographs as DICOM, JPEG or PNG",
        )
    return ds


def _guard_deflate(data: bytes, path: Path, options: DecodeOptions) -> None:
    """Reject a Deflated dataset that inflates past the file-size cap, before pydicom
    inflates it whole in memory."""
    if data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        return
    start = 144 + int.from_bytes(data[140:144], "little")
    if DeflatedExplicitVRLittleEndian.encode() not in data[132:start]:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[start:], 0
    try:
        while pending:
            total += len(inflater.decompress(pending, 16 * 1024**2))
            if total > options.max_file_bytes:
                raise TooLarge(
                    path,
                    f"its deflated dataset inflates to more than {_mb(options.max_file_bytes)}",
                    "raise CXR_MAX_FILE_MB if such files are legitimate",
                )
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise UnreadableScan(path, f"its deflated dataset is corrupt ({exc})", REEXPORT) from exc


def _ensure_transfer_syntax(ds: Dataset, path: Path, decisions: list[str]) -> None:
    """Give a dataset without file meta the transfer syntax its encoding shows."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None:
        file_meta = ds.file_meta = FileMetaDataset()
    if file_meta.get("TransferSyntaxUID"):
        return
    if "PixelData" in ds and ds["PixelData"].is_undefined_length:
        raise UnreadableScan(
            path,
            "has compressed pixel data but no Transfer Syntax UID to say how it is compressed",
            "re-export it as a DICOM Part 10 file (with file meta information)",
        )
    implicit, little_endian = ds.original_encoding
    if implicit or implicit is None:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    file_meta.TransferSyntaxUID = syntax
    decisions.append(f"no Transfer Syntax UID: {syntax.name} inferred from the data")


def _metadata(ds: Dataset, path: Path, options: DecodeOptions) -> ScanMetadata:
    try:
        return ScanMetadata(
            format="dicom",
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            modality=_upper(ds, "Modality"),
            body_part=_upper(ds, "BodyPartExamined"),
            view_position=_upper(ds, "ViewPosition"),
            photometric_interpretation=_upper(ds, "PhotometricInterpretation"),
            bits_stored=_int(ds, "BitsStored"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            patient_ref=patient_ref(
                options.pseudonym_key, _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")
            ),
        )
    except READ_ERRORS as exc:
        raise UnreadableScan(path, f"has a malformed header ({brief(exc)})", REEXPORT) from exc


def _check_scope(
    ds: Dataset,
    metadata: ScanMetadata,
    path: Path,
    options: DecodeOptions,
    decisions: list[str],
) -> None:
    """Raise the typed error for anything that is not a single chest radiograph in caps."""
    modality = metadata.modality
    sop_class = _text(ds, "SOPClassUID")
    described = f"Modality {modality or 'absent'}, {_uid_name(sop_class)}"
    if "PixelData" not in ds:
        raise NoPixelData(
            path,
            f"has no pixel data ({described})",
            "only radiograph images are screened; send the image series, not a report "
            "or other non-image object",
        )
    _check_modality(metadata, sop_class, described, path, options, decisions)
    body_part = metadata.body_part
    if body_part is None:
        decisions.append("no Body Part Examined: accepted as chest")
    elif body_part not in options.chest_body_parts:
        raise NotAChest(
            path,
            f"Body Part Examined is {body_part!r}, not a chest",
            f"only chest radiographs are screened (accepted: "
            f"{', '.join(options.chest_body_parts)}; set CXR_CHEST_BODY_PARTS to change)",
        )
    view = metadata.view_position
    if view is None:
        decisions.append("no View Position in header")
    elif view in LATERAL_VIEWS:
        decisions.append(
            f"lateral view ({view}): the model was trained on frontal (PA/AP) radiographs"
        )
    frames = _int(ds, "NumberOfFrames") or 1
    if frames > 1:
        raise MultiFrame(
            path,
            f"has {frames} frames",
            "only single-frame radiographs are screened; export the frame to screen as a "
            "single-frame image",
        )
    rows, columns = metadata.rows or 0, metadata.columns or 0
    if rows <= 0 or columns <= 0:
        raise UnreadableScan(path, "has pixel data but no valid Rows and Columns", REEXPORT)
    if rows * columns * frames > options.max_pixels:
        raise TooLarge(
            path,
            f"its header claims {columns} x {rows} pixels, more than the cap of "
            f"{options.max_pixels:,}",
            "raise CXR_MAX_PIXELS if such images are legitimate",
        )


def _check_modality(
    metadata: ScanMetadata,
    sop_class: str | None,
    described: str,
    path: Path,
    options: DecodeOptions,
    decisions: list[str],
) -> None:
    modality = metadata.modality
    is_secondary_capture = sop_class in SECONDARY_CAPTURE_SOP_CLASSES
    if modality in RADIOGRAPH_MODALITIES:
        if is_secondary_capture:
            decisions.append(f"Secondary Capture of a {modality} radiograph")
        elif sop_class == DigitalXRayImageStorageForProcessing:
            decisions.append("DX For Processing: raw detector data, not meant for display")
        return
    if modality is None and sop_class in RADIOGRAPH_SOP_CLASSES:
        decisions.append(f"no Modality: radiograph by SOP Class ({_uid_name(sop_class)})")
        return
    if modality in GENERIC_MODALITIES and is_secondary_capture:
        # A Secondary Capture may be a screenshot or a scanned form; only an explicit
        # chest body part says it is a chest radiograph.
        if metadata.body_part in options.chest_body_parts:
            decisions.append(
                f"Secondary Capture ({described}) accepted: Body Part Examined {metadata.body_part}"
            )
            return
        raise NotARadiograph(
            path,
            f"is a Secondary Capture ({described}) with no chest Body Part Examined, so "
            "nothing says it is a radiograph",
            "send the original CR/DX image, or export with Modality CR/DX or Body Part "
            "Examined CHEST",
        )
    raise NotARadiograph(
        path,
        f"is not a radiograph ({described})",
        "only CR and DX chest radiographs (or a Secondary Capture of one) are screened",
    )


def _check_codestream(ds: Dataset, path: Path, options: DecodeOptions) -> None:
    """Check the compressed stream's own size claim against the pixel cap.

    The header was checked already, but the decoders allocate what the codestream
    claims, and a crafted file can make the two disagree.
    """
    element = ds["PixelData"]
    if not element.is_undefined_length:
        return
    size = None
    try:
        for index, fragment in enumerate(generate_fragments(element.value)):
            size = codestream_size(bytes(fragment[:65536]))
            if size is not None or index >= 2:
                break
    except READ_ERRORS:
        return  # a broken item structure: the decoder reports it with its own words
    if size is not None and size[0] * size[1] > options.max_pixels:
        raise TooLarge(
            path,
            f"its compressed pixel data claims {size[1]} x {size[0]} pixels, more than the "
            f"cap of {options.max_pixels:,}",
            "raise CXR_MAX_PIXELS if such images are legitimate",
        )


def _decode_pixels(ds: Dataset, path: Path) -> npt.NDArray[np.generic]:
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        array: npt.NDArray[np.generic] = ds.pixel_array
    except DECODE_ERRORS as exc:
        raise UnreadableScan(
            path,
            f"its pixel data could not be decoded ({syntax.name}: {brief(exc)})",
            "the file is damaged or uses a compression no installed decoder supports; "
            "send it again or re-export it uncompressed",
        ) from exc
    return array


def _display(
    array: npt.NDArray[np.generic],
    ds: Dataset,
    metadata: ScanMetadata,
    path: Path,
    decisions: list[str],
) -> npt.NDArray[np.float32]:
    photometric = metadata.photometric_interpretation or "MONOCHROME2"
    bits_stored = metadata.bits_stored or 8
    if photometric in COLOUR_PHOTOMETRICS or array.ndim == 3:
        if photometric == "PALETTE COLOR":
            array = apply_color_lut(array, ds)
            full_scale = 65535.0 if array.dtype == np.uint16 else 255.0
        else:
            full_scale = float(2**bits_stored - 1)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise UnreadableScan(
                path, f"has {photometric} pixels of unexpected shape {array.shape}", REEXPORT
            )
        decisions.append(f"{photometric} converted to grey (luma)")
        grey = array.astype(np.float32) @ LUMA_WEIGHTS
        return np.ascontiguousarray(np.clip(grey / np.float32(full_scale), 0.0, 1.0))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnreadableScan(
            path,
            f"has Photometric Interpretation {photometric!r}, which the decoder does not know",
            "export it as MONOCHROME2 (or RGB)",
        )
    values, stored_values = _modality_values(array, ds, decisions)
    pixels, voi_decisions = to_display(
        values, ds, bits_stored=bits_stored, stored_values=stored_values
    )
    decisions.extend(voi_decisions)
    if _inversion(ds, photometric, decisions):
        np.subtract(np.float32(1.0), pixels, out=pixels)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _modality_values(
    array: npt.NDArray[np.generic], ds: Dataset, decisions: list[str]
) -> tuple[npt.NDArray[np.float32], bool]:
    """Modality values (Modality LUT or rescale), and whether they are the stored values."""
    if ds.get("ModalityLUTSequence"):
        decisions.append("Modality LUT from header")
        return np.asarray(apply_modality_lut(array, ds), dtype=np.float32), False
    values = array.astype(np.float32)
    slope = _float(ds, "RescaleSlope", 1.0)
    intercept = _float(ds, "RescaleIntercept", 0.0)
    if slope == 0.0:
        decisions.append("Rescale Slope 0 is invalid: ignored")
        slope = 1.0
    if slope != 1.0 or intercept != 0.0:
        values *= np.float32(slope)
        values += np.float32(intercept)
        decisions.append(f"rescale slope {slope:g}, intercept {intercept:g}")
        return values, False
    return values, _int(ds, "PixelRepresentation") != 1


def _inversion(ds: Dataset, photometric: str, decisions: list[str]) -> bool:
    """Whether low values are white, from Photometric Interpretation and Presentation LUT.

    For MONOCHROME1 the DX Image Module *requires* Presentation LUT Shape INVERSE: it
    states the same single inversion, not a second one (inverting twice shows bone black,
    as the real file dx_chest_pa_mono1_inverse_plut_j2k.dcm proves). IDENTITY on
    MONOCHROME1 contradicts it; like dcm4chee's "ignore Presentation LUT Shape" option,
    the Photometric Interpretation wins. On MONOCHROME2, INVERSE inverts.
    """
    shape = _upper(ds, "PresentationLUTShape")
    if photometric == "MONOCHROME1":
        if shape == "INVERSE":
            decisions.append("inverted MONOCHROME1 (Presentation LUT Shape INVERSE agrees)")
        elif shape == "IDENTITY":
            decisions.append(
                "inverted MONOCHROME1 (Presentation LUT Shape IDENTITY contradicts it; "
                "Photometric Interpretation wins)"
            )
        else:
            decisions.append("inverted MONOCHROME1")
        return True
    if shape == "INVERSE":
        decisions.append("inverted: Presentation LUT Shape INVERSE on MONOCHROME2")
        return True
    return False


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _upper(ds: Dataset, keyword: str) -> str | None:
    text = _text(ds, keyword)
    return text.upper() if text else None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return int(value)


def _float(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    return float(value)


def _uid_name(uid: str | None) -> str:
    if uid is None:
        return "no SOP Class"
    name = UID(uid).name
    return name if name != uid else f"SOP Class {uid}"


def _mb(size: int) -> str:
    return f"{size / 1024**2:g} MB"
