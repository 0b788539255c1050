"""Decode a DICOM radiograph: read carefully, check scope and caps, then pixels to display."""

from __future__ import annotations

import math
import struct
import zlib
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from worker.imaging.codestream import (
    CodestreamError,
    FrameGeometry,
    j2k_geometry,
    jpeg_geometry,
    rle_check,
)
from worker.imaging.errors import (
    MultiFrame,
    NoPixelData,
    NotAChest,
    NotARadiograph,
    NoUsableContent,
    TooLarge,
    UnreadableScan,
    brief,
)
from worker.imaging.pseudonym import patient_ref
from worker.imaging.radiograph import Radiograph, ScanMetadata
from worker.imaging.voi import stored_content_problem, to_display

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
# turned into a typed UnreadableScan that names the file; nothing is swallowed. The data
# is in memory, so an OSError is pydicom's "no tag to read" (a truncated item), never I/O.
READ_ERRORS = (
    InvalidDicomError,
    OSError,
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
# pydicom converts an element when it is first used, so a malformed one raises any of
# the read errors then (an unknown VR raises NotImplementedError, a short value
# struct.error), long after dcmread returned.
HEADER_ERRORS = READ_ERRORS
IDENTIFYING_KEYWORDS = ("SOPClassUID", "Modality", "PixelData", "Rows")
REEXPORT = "the file is damaged or incomplete; send it again or re-export it from the PACS"
BAD_STREAM = (
    "the file is damaged or its encoder is faulty; send it again or re-export it "
    "uncompressed from the PACS"
)
# The compressed transfer syntaxes whose frame size is read before decoding, and how.
# Any other compressed syntax is refused: its decoded size could not be checked.
JPEG_SYNTAXES = frozenset(
    {
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
    }
)
J2K_SYNTAXES = frozenset({JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})
# Radiographs are 8- or 16-bit (the DX IOD allows nothing else); 1-bit overlays and
# 32/64-bit data are refused, so a decoded sample is never more than two bytes.
RADIOGRAPH_BITS_ALLOCATED = (8, 16)
RADIOGRAPH_SAMPLES = (1, 3)  # grey, or the colour of a Secondary Capture
FLAT = (
    "no verdict is given on it; check the export (a blank or saturated image) and send "
    "the original radiograph"
)
RESCALE = (
    "no verdict is given on it; correct the rescale (or Modality LUT) at the modality or "
    "export the image again"
)


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
        geometry = _check_pixel_module(ds, metadata, path, options)
        _check_frame(ds, geometry, path, options)
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
            # Never ask for more than one byte past the cap: a chunk is memory too.
            budget = min(16 * 1024**2, options.max_file_bytes + 1 - total)
            total += len(inflater.decompress(pending, budget))
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


def _check_pixel_module(
    ds: Dataset, metadata: ScanMetadata, path: Path, options: DecodeOptions
) -> FrameGeometry:
    """Check what the header says a decoder will allocate: size, samples, bits, frames.

    The cap counts every sample of every frame: a colour image holds three values per
    pixel, and Samples per Pixel or Bits Allocated raised in a header would otherwise
    multiply the memory the cap allows.
    """
    rows, columns = metadata.rows or 0, metadata.columns or 0
    if rows <= 0 or columns <= 0:
        raise UnreadableScan(path, "has pixel data but no valid Rows and Columns", REEXPORT)
    samples = _int(ds, "SamplesPerPixel") or 1
    if samples not in RADIOGRAPH_SAMPLES:
        raise UnreadableScan(
            path,
            f"has Samples per Pixel {samples}; a radiograph has 1 (grey) or 3 (colour)",
            REEXPORT,
        )
    bits_allocated = _int(ds, "BitsAllocated")
    if bits_allocated not in RADIOGRAPH_BITS_ALLOCATED:
        raise UnreadableScan(
            path,
            f"has Bits Allocated {bits_allocated}; a radiograph is stored in 8 or 16 bits",
            REEXPORT,
        )
    bits_stored = metadata.bits_stored
    if bits_stored is not None and not 1 <= bits_stored <= bits_allocated:
        raise UnreadableScan(
            path, f"has Bits Stored {bits_stored} with Bits Allocated {bits_allocated}", REEXPORT
        )
    frames = _int(ds, "NumberOfFrames") or 1
    if frames < 1:
        raise UnreadableScan(path, f"has Number of Frames {frames}", REEXPORT)
    if rows * columns * samples * frames > options.max_pixels:
        raise TooLarge(
            path,
            f"its header claims {columns} x {rows} pixels{_samples(samples)}, more than the "
            f"cap of {options.max_pixels:,}",
            "raise CXR_MAX_PIXELS if such images are legitimate",
        )
    return FrameGeometry(rows, columns, samples, bits_allocated)


def _check_frame(ds: Dataset, expected: FrameGeometry, path: Path, options: DecodeOptions) -> None:
    """Read what the compressed frame decodes to, and refuse it unless it is the header's.

    The decoders allocate what the codestream claims, not what the header says, so the
    frame's own size is read first, from the whole frame (a frame header may sit behind
    any amount of other data). The dataset then holds exactly the frame that was checked,
    as a single fragment: pydicom's own frame lookup (offset tables, excess fragments)
    cannot pick other bytes than those.
    """
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    element = ds["PixelData"]
    if not syntax.is_encapsulated:
        if element.is_undefined_length:
            raise UnreadableScan(
                path,
                f"has compressed (encapsulated) pixel data under {syntax.name}, an "
                "uncompressed transfer syntax",
                REEXPORT,
            )
        return  # native pixels: pydicom sizes them from the header checked already
    if syntax not in JPEG_SYNTAXES | J2K_SYNTAXES | {RLELossless}:
        raise UnreadableScan(
            path,
            f"uses the transfer syntax {syntax.name}, whose decoded size the screening "
            "decoder cannot check",
            "re-export it uncompressed or as JPEG, JPEG-LS, JPEG 2000 or RLE",
        )
    try:
        frame = get_frame(element.value, 0, number_of_frames=1)
    except READ_ERRORS as exc:
        raise UnreadableScan(
            path, f"its compressed pixel data has no readable frame ({brief(exc)})", REEXPORT
        ) from exc
    try:
        if syntax == RLELossless:
            rle_check(
                frame,
                pixels=expected.rows * expected.columns,
                segments=expected.components * (expected.precision // 8),
            )
        else:
            reader = jpeg_geometry if syntax in JPEG_SYNTAXES else j2k_geometry
            _compare(reader(frame), expected, syntax, path, options)
    except CodestreamError as exc:
        raise _bad_stream(path, syntax, exc.reason) from exc
    ds.PixelData = encapsulate([frame], has_bot=False)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]


def _compare(
    claimed: FrameGeometry,
    expected: FrameGeometry,
    syntax: UID,
    path: Path,
    options: DecodeOptions,
) -> None:
    """Refuse a codestream over the cap, or one that is not the image the header describes."""
    if claimed.rows * claimed.columns * claimed.components > options.max_pixels:
        raise TooLarge(
            path,
            f"its compressed pixel data claims {claimed.columns} x {claimed.rows} pixels"
            f"{_samples(claimed.components)}, more than the cap of {options.max_pixels:,}",
            "raise CXR_MAX_PIXELS if such images are legitimate",
        )
    if (claimed.rows, claimed.columns, claimed.components) != (
        expected.rows,
        expected.columns,
        expected.components,
    ):
        raise _bad_stream(
            path,
            syntax,
            f"the codestream is {claimed.describe()} (columns x rows x samples), the header "
            f"says {expected.describe()}",
        )
    claimed.check_tiles()
    if claimed.precision > expected.precision:
        raise _bad_stream(
            path,
            syntax,
            f"the codestream has {claimed.precision}-bit samples, more than the header's "
            f"Bits Allocated {expected.precision}",
        )


def _bad_stream(path: Path, syntax: UID, reason: str) -> UnreadableScan:
    return UnreadableScan(
        path,
        f"its pixel data could not be decoded ({syntax.name}: {reason}; refused before decoding)",
        BAD_STREAM,
    )


def _samples(samples: int) -> str:
    return "" if samples == 1 else f" x {samples} samples"


def _decode_pixels(ds: Dataset, path: Path) -> npt.NDArray[np.generic]:
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    # Only the first frame (there is one), never frames pydicom would find in excess
    # padding or fragments: the size of that frame is all that was checked.
    ds.pixel_array_options(index=0, allow_excess_frames=False)
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
    problem = stored_content_problem(array)
    if problem is not None:
        raise NoUsableContent(path, f"{problem}, so there is no image to screen", FLAT)
    values, stored_values = _modality_values(array, ds, path, decisions)
    pixels, voi_decisions = to_display(
        values, ds, bits_stored=bits_stored, stored_values=stored_values
    )
    decisions.extend(voi_decisions)
    if _inversion(ds, photometric, decisions):
        np.subtract(np.float32(1.0), pixels, out=pixels)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _modality_values(
    array: npt.NDArray[np.generic], ds: Dataset, path: Path, decisions: list[str]
) -> tuple[npt.NDArray[np.float32], bool]:
    """Modality values (Modality LUT or rescale), and whether they are the stored values.

    Raises:
        NoUsableContent: The rescale is not finite, or it leaves no finite values or
            maps distinct stored values all to one.
    """
    if ds.get("ModalityLUTSequence"):
        decisions.append("Modality LUT from header")
        values = np.asarray(apply_modality_lut(array, ds), dtype=np.float32)
        _require_finite(values, "its Modality LUT", path)
        return values, False
    values = array.astype(np.float32)
    slope = _float(ds, "RescaleSlope", 1.0)
    intercept = _float(ds, "RescaleIntercept", 0.0)
    rescale = f"Rescale Slope {slope:g}, Rescale Intercept {intercept:g}"
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise NoUsableContent(
            path,
            f"its header has {rescale}, which are not both finite numbers, so no pixel has a value",
            RESCALE,
        )
    if slope == 0.0:
        decisions.append("Rescale Slope 0 is invalid: ignored")
        slope = 1.0
    if slope != 1.0 or intercept != 0.0:
        # An overflow to infinity is refused just below, with the file's name.
        with np.errstate(over="ignore", invalid="ignore"):
            values *= np.float32(slope)
            values += np.float32(intercept)
        _require_finite(values, f"its {rescale}", path)
        if values.size and values.min() == values.max() and array.min() != array.max():
            raise NoUsableContent(
                path, f"its {rescale} maps every stored value to the same number", RESCALE
            )
        decisions.append(f"rescale slope {slope:g}, intercept {intercept:g}")
        return values, False
    return values, _int(ds, "PixelRepresentation") != 1


def _require_finite(values: npt.NDArray[np.float32], source: str, path: Path) -> None:
    # min and max propagate NaN and reach any infinity: two passes, no mask allocated.
    if values.size and not (np.isfinite(values.min()) and np.isfinite(values.max())):
        raise NoUsableContent(
            path, f"{source} gives pixel values that are not finite numbers", RESCALE
        )


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
