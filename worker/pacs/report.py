"""Build the TID 1500 Measurement Report (a Comprehensive SR) of one screening result."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    ComprehensiveSR,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from worker.pacs.errors import ReportBuildError

ALGORITHM_NAME = "cxr-screen"
MANUFACTURER = "cxr-screen"
# One series per study holds every cxr-screen report of that study; a high number keeps
# it after the acquisition series in a PACS's series list.
SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "cxr-screen AI result (not a diagnosis)"
DISCLAIMER = "AI result, not a diagnosis"
# The only identifying attributes copied from the image: those the Patient and General
# Study modules require (Type 1 and 2), which every instance of the study carries so
# that the PACS files the report with its images, and the Issuer of Patient ID that
# qualifies the ID. Nothing else (age, weight, addresses, other IDs, institution,
# operators) is copied; the Referring Physician's Name is sent empty.
PATIENT_AND_STUDY = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
)
_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
)
# Known classes of the model with their SNOMED CT concepts; another positive class is
# written with a private code (coding scheme 99CXR, declared in the document).
FINDINGS = {"PNEUMONIA": CodedConcept("233604007", "SCT", "Pneumonia")}
PRIVATE_SCHEME = "99CXR"
NO_UNITS = CodedConcept("1", "UCUM", "no units")
# Procedure reported (TID 1500; its CID 100 is extensible): SNOMED CT 399208008
# "Plain X-ray of chest" (preferred term "Plain chest X-ray"), the procedure whatever
# the view (PA, AP, lateral); LOINC's chest codes name the number of views instead.
CHEST_RADIOGRAPH = CodedConcept("399208008", "SCT", "Plain chest X-ray")
# TID 1500's document-level container of qualitative evaluations (CODE or TEXT items).
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
# Namespace of cxr-screen's name-based UIDs; never change it, or rebuilt reports would
# reach the PACS as new instances.
UID_NAMESPACE = uuid.UUID("5f1d7c1e-8a43-5b0e-9c1a-2f6d1e0b7a94")


@dataclass(frozen=True, slots=True)
class ResultFacts:
    """One prediction, as the report states it.

    Attributes:
        label: The verdict at the operating threshold (a class name of the model).
        positive_class: The class the probability is of (PNEUMONIA).
        probability: Probability of the positive class, 0 to 1.
        threshold: The operating threshold: positive when probability >= threshold.
        model_version: The model version that made the prediction.
        scan_sha256: SHA-256 of the screened file (makes the report's UID unique per scan).
    """

    label: str
    positive_class: str
    probability: float
    threshold: float
    model_version: str
    scan_sha256: str

    @property
    def positive(self) -> bool:
        return self.label == self.positive_class


def software_version() -> str:
    """cxr-screen's installed version, for the report's Software Versions."""
    try:
        return metadata.version("cxr-screen")
    except metadata.PackageNotFoundError:
        return "unknown"


def derived_uid(*parts: str) -> str:
    """A UID that is a pure function of `parts`: `2.25.` + a name-based UUID (PS3.5 B.2).

    (pydicom's `generate_uid(None, entropy)` ignores the entropy and is random.)
    """
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(0).join(parts)).int}"


def report_uids(image: Dataset, facts: ResultFacts) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of the report, the same on every rebuild.

    Derived from the study (one report series per study) and from the image, scan and
    model version, so a rebuilt report is the same instance to the PACS, never a copy.
    """
    series = derived_uid("report series", str(image.StudyInstanceUID))
    instance = derived_uid(
        "report", str(image.SOPInstanceUID), facts.scan_sha256, facts.model_version
    )
    return series, instance


def finding_code(positive_class: str) -> CodedConcept:
    """The coded finding the model screens for."""
    known = FINDINGS.get(positive_class.upper())
    if known is not None:
        return known
    return CodedConcept(positive_class.upper()[:16], PRIVATE_SCHEME, positive_class.title())


def statement(facts: ResultFacts) -> str:
    """The sentence a reader sees first: what the AI said, and that it is not a diagnosis."""
    verdict = facts.positive_class if facts.positive else f"not {facts.positive_class}"
    return (
        f"{DISCLAIMER}. cxr-screen model {facts.model_version} estimated a probability "
        f"of {facts.positive_class.lower()} of {facts.probability:.3f} (operating threshold "
        f"{facts.threshold:.3f}): {verdict}. Screening support only; the images must be "
        "read by a qualified person."
    )


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value warnings while patient headers are handled.

    pydicom warns about non-conformant values (an over-long Accession Number, say) and
    some of its warnings quote the value: patient data must not reach the logs. Such
    values are copied as they are, as the PACS matches on them. The setting is
    process-wide; a worker builds and sends reports one at a time. Nests.
    """
    saved = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    logger = pydicom_config.logger
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        pydicom_config.settings.writing_validation_mode = saved
        logger.setLevel(level)


def _evidence(image: Dataset) -> Dataset:
    """The image header reduced to its references and the patient and study identifiers."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        if not image.get(keyword):
            raise ReportBuildError(
                f"the screened image has no {keyword}",
                "only images from a PACS or modality (complete DICOM headers) get a report",
            )
    evidence = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", *PATIENT_AND_STUDY):
        if keyword in image:
            evidence[keyword] = image[keyword]
    for keyword in _TYPE_2:
        if keyword not in evidence:
            setattr(evidence, keyword, None)
    # highdicom accepts only valid values here; anything else (a de-identified file's
    # hashed birth date, say) is sent empty, as these attributes may be.
    if evidence.PatientSex not in ("M", "F", "O"):
        evidence.PatientSex = None
    for keyword, kind in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
        value = evidence.get(keyword)
        if value:
            try:
                kind(value)
            except ValueError:
                setattr(evidence, keyword, None)
    return evidence


def tracking_uid(image: Dataset, facts: ResultFacts) -> str:
    """Tracking Unique Identifier of the finding: the same for every model version.

    One scan's pneumonia finding is one tracked finding, whichever model reports on it,
    so a reader (or a PACS) can line up the reports of successive models.
    """
    return derived_uid(
        "tracking", str(image.SOPInstanceUID), facts.scan_sha256, facts.positive_class.upper()
    )


def _measurement_group(image: Dataset, facts: ResultFacts) -> MeasurementsAndQualitativeEvaluations:
    """TID 1501: the finding, its presence at the threshold, probability and threshold."""
    finding = finding_code(facts.positive_class)
    algorithm = AlgorithmIdentification(name=ALGORITHM_NAME, version=facts.model_version)
    source = SourceImageForMeasurementGroup(
        referenced_sop_class_uid=str(image.SOPClassUID),
        referenced_sop_instance_uid=str(image.SOPInstanceUID),
    )
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=tracking_uid(image, facts),
            identifier=f"cxr-screen {facts.positive_class.lower()} screening",
        ),
        finding_type=finding,
        algorithm_id=algorithm,
        qualitative_evaluations=[
            QualitativeEvaluation(
                name=finding, value=codes.SCT.Present if facts.positive else codes.SCT.Absent
            )
        ],
        measurements=[
            Measurement(
                name=codes.DCM.Probability,
                value=round(facts.probability, 6),
                unit=NO_UNITS,
                algorithm_id=algorithm,
            ),
            Measurement(
                name=codes.DCM.CADOperatingPoint,
                value=round(facts.threshold, 6),
                unit=NO_UNITS,
                algorithm_id=algorithm,
            ),
        ],
        source_images=[source],
    )


def _content(image: Dataset, facts: ResultFacts, device_uid: str) -> Dataset:
    """The TID 1500 Measurement Report tree, with the statement as a qualitative evaluation."""
    observer = ObservationContext(
        observer_device_context=ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                uid=device_uid,
                name=ALGORITHM_NAME,
                manufacturer_name=MANUFACTURER,
                model_name=facts.model_version,
            ),
        )
    )
    report = MeasurementReport(
        observation_context=observer,
        procedure_reported=CHEST_RADIOGRAPH,
        imaging_measurements=[_measurement_group(image, facts)],
    )
    root = report[0]
    # The document-level Qualitative Evaluations of TID 1500: highdicom 0.28's
    # MeasurementReport takes imaging measurements only, so the container is added here,
    # after them, as the template orders it. A reader that does not know it still reads
    # the measurement group; highdicom parses the document back all the same.
    evaluations = ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS
    )
    evaluations.ContentSequence = ContentSequence(
        [
            TextContentItem(
                name=codes.DCM.Comment,
                value=statement(facts),
                relationship_type=RelationshipTypeValues.CONTAINS,
            )
        ]
    )
    root.ContentSequence.append(evaluations)
    return root


def build_report(image: Dataset, facts: ResultFacts, *, device_uid: str) -> ComprehensiveSR:
    """A TID 1500 Measurement Report, stored as a Comprehensive SR in the image's study.

    Content (the shape IHE AI Results expects): the observer (cxr-screen, a device, with
    the model version), the procedure reported (a chest radiograph), one measurement
    group (TID 1501) with a tracking identifier, the finding (pneumonia), its presence
    at the operating threshold (a qualitative evaluation), the probability and the
    threshold (measurements), the algorithm name and version, and the screened image as
    the group's source; and, at the document level, the statement that this is an AI
    result and not a diagnosis. The document is COMPLETE, UNVERIFIED and PRELIMINARY:
    no person has verified it.

    Args:
        image: The screened image's header (pixels not needed).
        facts: The prediction.
        device_uid: Device Observer UID of this cxr-screen installation.

    Raises:
        ReportBuildError: The header lacks what a report must reference.
    """
    if not 0.0 <= facts.probability <= 1.0 or not 0.0 <= facts.threshold <= 1.0:
        raise ReportBuildError(
            f"probability {facts.probability} or threshold {facts.threshold} is not in [0, 1]",
            "the prediction row is corrupt; screen the scan again",
        )
    with quiet_pydicom():
        evidence = _evidence(image)
        series_uid, sop_uid = report_uids(evidence, facts)
        coding_schemes = None
        if facts.positive_class.upper() not in FINDINGS:
            coding_schemes = [
                hd.coding_schemes.CodingSchemeIdentificationItem(
                    designator=PRIVATE_SCHEME,
                    name="cxr-screen model classes",
                    responsible_organization="cxr-screen",
                )
            ]
        try:
            return ComprehensiveSR(
                evidence=[evidence],
                content=_content(evidence, facts, device_uid),
                series_instance_uid=series_uid,
                series_number=SERIES_NUMBER,
                sop_instance_uid=sop_uid,
                instance_number=1,
                manufacturer=MANUFACTURER,
                is_complete=True,
                is_final=False,
                is_verified=False,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                series_description=SERIES_DESCRIPTION,
                manufacturer_model_name=ALGORITHM_NAME,
                software_versions=software_version(),
                coding_schemes=coding_schemes,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            # highdicom checks what it writes; a header it refuses is this image's fault.
            # Only the exception's type: its text may quote a header value (a name).
            raise ReportBuildError(
                f"highdicom refused to build the report ({type(exc).__name__})",
                "inspect the archived image's header with `cxr-screen inspect`",
            ) from exc


def device_observer_uid(ae_title: str) -> str:
    """A stable Device Observer UID for the cxr-screen node with this AE title."""
    return derived_uid("device observer", ae_title)
