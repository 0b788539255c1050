"""Build the Secondary Capture image that carries a screening heatmap back to the PACS."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from highdicom import AnatomicalOrientationTypeValues
from highdicom.enum import PatientOrientationValuesBiped, PatientOrientationValuesQuadruped
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from worker.pacs.errors import ReportBuildError
from worker.pacs.report import (
    ALGORITHM_NAME,
    DISCLAIMER,
    MANUFACTURER,
    PATIENT_AND_STUDY,
    ResultFacts,
    _evidence,
    derived_uid,
    quiet_pydicom,
    software_version,
)

# The heatmaps of a study share one series of their own, after the report series (9901).
SERIES_NUMBER = 9902
SERIES_DESCRIPTION = "cxr-screen AI heatmap, not for diagnosis"
# Rows and Columns are US: a picture larger than this cannot be a DICOM image.
MAX_SIDE = 65535
BODY_PART = "CHEST"
ALWAYS_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless})


def heatmap_uids(image: Dataset, facts: ResultFacts) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of the heatmap, the same on every rebuild.

    As for the report: one heatmap series per study, one instance per (image, scan,
    model version), so a rebuilt heatmap replaces itself in the PACS, never duplicates.
    """
    series = derived_uid("heatmap series", str(image.StudyInstanceUID))
    instance = derived_uid(
        "heatmap", str(image.SOPInstanceUID), facts.scan_sha256, facts.model_version
    )
    return series, instance


def _orientation(image: Dataset) -> tuple[tuple[str, str], str | None] | None:
    """The image's Patient Orientation and Anatomical Orientation Type, if highdicom takes it.

    The picture shows the screened image scaled, never turned or flipped (the model
    input, and beside it the same with the heatmap blended in, the caption in a band
    below): its rows and columns run in the image's directions, so the image's
    orientation is true of it. Oblique values ("FL") and absent or malformed ones give
    None: the attribute is then written empty, which the SC Image IOD allows (Type 2),
    rather than guessed.
    """
    kind = image.get("AnatomicalOrientationType") or None
    allowed: type[PatientOrientationValuesBiped] | type[PatientOrientationValuesQuadruped]
    if kind is None or kind == AnatomicalOrientationTypeValues.BIPED.value:
        allowed = PatientOrientationValuesBiped
    elif kind == AnatomicalOrientationTypeValues.QUADRUPED.value:
        allowed = PatientOrientationValuesQuadruped
    else:
        return None
    value = image.get("PatientOrientation")
    if not value or isinstance(value, str) or len(value) != 2:
        return None
    rows, columns = (str(v) for v in value)
    known = {member.value for member in allowed}
    if rows not in known or columns not in known:
        return None
    return (rows, columns), kind


def _check_pixels(pixels: npt.NDArray[Any]) -> None:
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 3
        or pixels.shape[2] != 3
        or not 0 < pixels.shape[0] <= MAX_SIDE
        or not 0 < pixels.shape[1] <= MAX_SIDE
    ):
        what = (
            f"{pixels.dtype} {pixels.shape}"
            if isinstance(pixels, np.ndarray)
            else type(pixels).__name__
        )
        raise ReportBuildError(
            f"the heatmap picture is {what}, not an RGB uint8 array (H, W, 3)",
            f"render it as 8-bit RGB, each side 1 to {MAX_SIDE} pixels",
        )


def _source_image(image: Dataset) -> Dataset:
    reference = Dataset()
    reference.ReferencedSOPClassUID = image.SOPClassUID
    reference.ReferencedSOPInstanceUID = image.SOPInstanceUID
    purpose = codes.DCM.SourceImageForImageProcessingOperation
    code = Dataset()
    code.CodeValue = purpose.value
    code.CodingSchemeDesignator = purpose.scheme_designator
    code.CodeMeaning = purpose.meaning
    reference.PurposeOfReferenceCodeSequence = [code]
    return reference


def _was_lossy(image: Dataset) -> bool:
    """Whether the screened image was ever lossy compressed: then so is the heatmap.

    The image says so (Lossy Image Compression 01), or its transfer syntax is always
    lossy (PS3.3 C.7.6.1.1.5: once lossy compressed, every derived image says so).
    """
    if image.get("LossyImageCompression") == "01":
        return True
    meta = getattr(image, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return syntax in ALWAYS_LOSSY


def build_heatmap_sc(
    image: Dataset, pixels: npt.NDArray[Any], facts: ResultFacts, *, device_uid: str
) -> SCImage:
    """A Secondary Capture Image of the heatmap, in the image's study, in its own series.

    The picture (the caller renders it: the image, the heatmap over it, and the caption
    burned in) is stored as it is, RGB, uncompressed (Explicit VR Little Endian): DERIVED
    \\ SECONDARY, made on a workstation (WSD), Burned In Annotation YES, the screened
    image its source. Only the patient and study identifiers the report copies are
    copied (`PATIENT_AND_STUDY`).

    Args:
        image: The screened image's header (pixels not needed).
        pixels: The rendered picture, uint8, shape (rows, columns, 3), RGB.
        facts: The prediction the heatmap explains.
        device_uid: Device UID of this cxr-screen installation (the report's observer).

    Raises:
        ReportBuildError: The picture is not 8-bit RGB, or the header lacks what the
            image must reference.
    """
    _check_pixels(pixels)
    with quiet_pydicom():
        evidence = _evidence(image)
        series_uid, sop_uid = heatmap_uids(evidence, facts)
        orientation = _orientation(image)
        try:
            sc = SCImage(
                pixel_array=pixels,
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                study_instance_uid=str(evidence.StudyInstanceUID),
                series_instance_uid=series_uid,
                series_number=SERIES_NUMBER,
                sop_instance_uid=sop_uid,
                instance_number=1,
                manufacturer=MANUFACTURER,
                # highdicom wants an orientation for a PATIENT image; an image without
                # a usable one gets it written empty below.
                patient_orientation=orientation[0] if orientation else ("L", "F"),
                anatomical_orientation_type=orientation[1] if orientation else None,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                series_description=SERIES_DESCRIPTION,
                manufacturer_model_name=ALGORITHM_NAME,
                software_versions=software_version(),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            # Only the exception's type: its text may quote a header value.
            raise ReportBuildError(
                f"highdicom refused to build the heatmap image ({type(exc).__name__})",
                "inspect the archived image's header with `cxr-screen inspect`",
            ) from exc
        if orientation is None:
            sc["PatientOrientation"].value = None
        # Patient and study identifiers as the report carries them (copied as they are:
        # the PACS matches on them; highdicom would refuse some real-world values).
        for keyword in PATIENT_AND_STUDY:
            if keyword in evidence:
                sc[keyword] = evidence[keyword]
        # The body part cxr-screen screens (and the report's procedure, a chest
        # radiograph). A chest is not paired, so General Series Laterality (Type 2C,
        # for paired parts) is absent, as dciodvfy expects once the part is named.
        sc.BodyPartExamined = BODY_PART
        sc.ConversionType = "WSD"
        sc.ImageType = ["DERIVED", "SECONDARY"]
        sc.BurnedInAnnotation = "YES"
        sc.DeviceUID = device_uid
        sc.SourceImageSequence = [_source_image(evidence)]
        sc.DerivationDescription = (
            f"{DISCLAIMER}: Grad-CAM heatmap of cxr-screen model {facts.model_version} "
            "over the screened image, caption burned in"
        )
        if _was_lossy(image):
            sc.LossyImageCompression = "01"
    return sc
