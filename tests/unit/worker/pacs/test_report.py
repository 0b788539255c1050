"""The result SR: content, study membership, stable UIDs, and only the identifiers it must."""

from __future__ import annotations

import logging
import warnings
from io import BytesIO
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from worker.pacs.aet import is_uid
from worker.pacs.errors import ReportBuildError
from worker.pacs.report import (
    DISCLAIMER,
    SERIES_NUMBER,
    ResultFacts,
    build_report,
    device_observer_uid,
)

DEVICE = device_observer_uid("CXR_SCREEN")


def _facts(**changes: object) -> ResultFacts:
    values: dict[str, object] = {
        "label": "PNEUMONIA",
        "positive_class": "PNEUMONIA",
        "probability": 0.8734,
        "threshold": 0.35,
        "model_version": "20261129-0200",
        "scan_sha256": "ab" * 32,
    }
    values.update(changes)
    return ResultFacts(**values)  # type: ignore[arg-type]


def _header(dicom_dir: Path, name: str = "cr_chest_pa_mono1_j2k_lossless.dcm") -> Dataset:
    return dcmread(dicom_dir / name, stop_before_pixels=True)


def _round_trip(report: Dataset) -> hd.sr.ComprehensiveSR:
    buffer = BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    parsed = hd.sr.srread(buffer)
    assert isinstance(parsed, hd.sr.ComprehensiveSR)
    return parsed


def _items(report: Dataset) -> dict[str, list[Dataset]]:
    """Every content item of the tree by its concept name's meaning, in document order."""
    found: dict[str, list[Dataset]] = {}

    def walk(items: list[Dataset]) -> None:
        for item in items:
            found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
            walk(list(item.get("ContentSequence", [])))

    walk(list(report.ContentSequence))
    return found


def _code(item: Dataset) -> tuple[str, str, str]:
    concept = item.ConceptCodeSequence[0]
    return (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning)


def _group(report: hd.sr.ComprehensiveSR) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    assert isinstance(report.content, hd.sr.MeasurementReport)
    groups = report.content.get_image_measurement_groups()
    assert len(groups) == 1
    return groups[0]


def _statement(report: Dataset) -> Dataset:
    """The TEXT item of the document-level Qualitative Evaluations container (row 12)."""
    root_items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in report.ContentSequence}
    container = root_items["Qualitative Evaluations"]
    assert container.ValueType == "CONTAINER"
    assert container.RelationshipType == "CONTAINS"
    code = container.ConceptNameCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("C0034375", "UMLS")
    (text,) = container.ContentSequence
    assert (text.ValueType, text.RelationshipType) == ("TEXT", "CONTAINS")
    assert text.ConceptNameCodeSequence[0].CodeMeaning == "Comment"
    return text


def test_the_report_is_a_tid_1500_measurement_report(dicom_dir: Path) -> None:
    report = _round_trip(build_report(_header(dicom_dir), _facts(), device_uid=DEVICE))
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33", "still a Comprehensive SR"
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert report.ContentTemplateSequence[0].MappingResource == "DCMR"
    title = report.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("126000", "DCM")
    root_items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in report.ContentSequence}
    procedure = root_items["Procedure reported"]
    assert procedure.RelationshipType == "HAS CONCEPT MOD"
    assert _code(procedure) == ("399208008", "SCT", "Plain chest X-ray")
    assert root_items["Imaging Measurements"].ValueType == "CONTAINER"
    assert isinstance(report.content, hd.sr.MeasurementReport)
    (observer,) = report.content.get_observer_contexts()
    assert observer.observer_type == codes.DCM.Device
    device = observer.observer_identifying_attributes
    assert isinstance(device, hd.sr.DeviceObserverIdentifyingAttributes)
    assert (device.uid, device.name) == (DEVICE, "cxr-screen")
    assert (device.manufacturer_name, device.model_name) == ("cxr-screen", "20261129-0200")


def test_the_report_holds_the_result_and_says_it_is_not_a_diagnosis(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    report = _round_trip(build_report(image, _facts(), device_uid=DEVICE))
    group = _group(report)

    assert group.finding_type == hd.sr.CodedConcept("233604007", "SCT", "Pneumonia")
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.name == hd.sr.CodedConcept("233604007", "SCT", "Pneumonia")
    assert evaluation.value == codes.SCT.Present
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(0.8734)
    assert probability.unit == hd.sr.CodedConcept("1", "UCUM", "no units")
    (threshold,) = group.get_measurements(name=codes.DCM.CADOperatingPoint)
    assert threshold.value == pytest.approx(0.35)
    assert threshold.unit.value == "1"
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == image.SOPInstanceUID
    assert source.referenced_sop_class_uid == image.SOPClassUID
    assert source.RelationshipType == "CONTAINS"
    assert group.tracking_identifier == "cxr-screen pneumonia screening"
    assert group.tracking_uid is not None
    assert is_uid(group.tracking_uid)

    # The algorithm is named on the group and on each measurement (TID 4019).
    items = _items(report)
    assert [i.TextValue for i in items["Algorithm Name"]] == ["cxr-screen"] * 3
    assert [i.TextValue for i in items["Algorithm Version"]] == ["20261129-0200"] * 3
    for measurement in (probability, threshold):
        names = {
            i.ConceptNameCodeSequence[0].CodeMeaning: i for i in measurement[0].ContentSequence
        }
        assert names["Algorithm Name"].TextValue == "cxr-screen"
        assert names["Algorithm Version"].TextValue == "20261129-0200"

    text = _statement(report).TextValue
    assert text.startswith(f"{DISCLAIMER}.")
    assert "0.873" in text
    assert (report.VerificationFlag, report.CompletionFlag) == ("UNVERIFIED", "COMPLETE")
    assert report.PreliminaryFlag == "PRELIMINARY"


def test_a_negative_verdict_says_absent(dicom_dir: Path) -> None:
    report = build_report(
        _header(dicom_dir), _facts(label="NORMAL", probability=0.12), device_uid=DEVICE
    )
    group = _group(_round_trip(report))
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.value == codes.SCT.Absent
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(0.12)
    assert "not PNEUMONIA" in _statement(report).TextValue


def test_the_report_joins_the_image_study_in_a_series_of_its_own(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    report = build_report(image, _facts(), device_uid=DEVICE)
    assert report.StudyInstanceUID == image.StudyInstanceUID
    assert report.SeriesInstanceUID != image.SeriesInstanceUID
    assert report.SeriesNumber == SERIES_NUMBER
    assert report.Modality == "SR"
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == image.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == image.SOPInstanceUID


def test_uids_are_the_same_on_a_rebuild_and_differ_per_model_version(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    first = build_report(image, _facts(), device_uid=DEVICE)
    again = build_report(image, _facts(), device_uid=DEVICE)
    other_model = build_report(image, _facts(model_version="v2"), device_uid=DEVICE)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert is_uid(first.SOPInstanceUID)
    assert is_uid(first.SeriesInstanceUID)
    assert first.SOPInstanceUID != other_model.SOPInstanceUID
    assert first.SeriesInstanceUID == other_model.SeriesInstanceUID, "one series per study"
    # The finding is tracked across model versions: the same scan, the same tracked finding.
    other_scan = build_report(image, _facts(scan_sha256="cd" * 32), device_uid=DEVICE)
    tracked = [_group(_round_trip(r)).tracking_uid for r in (first, again, other_model, other_scan)]
    assert tracked[0] == tracked[1] == tracked[2]
    assert tracked[0] != tracked[3]


def test_only_the_patient_and_study_identifiers_are_copied(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    image.PatientAge = "086Y"
    image.OtherPatientIDs = "OTHER-42"
    image.InstitutionName = "General Hospital"
    image.ReferringPhysicianName = "Doe^Jane"
    image.OperatorsName = "Roe^Rick"
    report = build_report(image, _facts(), device_uid=DEVICE)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert report[keyword].value == image[keyword].value
    for keyword in ("AccessionNumber", "StudyID", "StudyDate", "StudyTime"):
        assert report[keyword].value == image[keyword].value
    for keyword in ("PatientAge", "OtherPatientIDs", "InstitutionName", "OperatorsName"):
        assert keyword not in report
    assert not report.ReferringPhysicianName
    text = str(report)
    for value in ("OTHER-42", "General Hospital", "Doe^Jane", "Roe^Rick", "086Y"):
        assert value not in text


def test_values_highdicom_refuses_are_sent_empty_and_nothing_is_logged(
    dicom_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A de-identified file: hashed birth date and study date, a 56-character Accession
    # Number, and a patient name without components.
    image = _header(dicom_dir, "dx_chest_pa_mono1_inverse_plut_j2k.dcm")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        report = build_report(image, _facts(), device_uid=DEVICE)
    assert not report.PatientBirthDate
    assert report.AccessionNumber == image.AccessionNumber, "copied as is: the PACS matches on it"
    assert report.PatientID == image.PatientID
    said = " ".join([str(w.message) for w in caught] + [r.getMessage() for r in caplog.records])
    for value in (str(image.PatientName), str(image.AccessionNumber), str(image.PatientID)):
        assert value not in said


def test_another_positive_class_gets_a_declared_private_code(dicom_dir: Path) -> None:
    facts = _facts(label="TUBERCULOSIS", positive_class="TUBERCULOSIS")
    report = _round_trip(build_report(_header(dicom_dir), facts, device_uid=DEVICE))
    group = _group(report)
    assert group.finding_type is not None
    finding = group.finding_type
    assert (finding.scheme_designator, finding.meaning) == ("99CXR", "Tuberculosis")
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.name == finding
    assert evaluation.value == codes.SCT.Present
    schemes = [s.CodingSchemeDesignator for s in report.CodingSchemeIdentificationSequence]
    assert "99CXR" in schemes


def test_a_header_without_uids_cannot_have_a_report(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    del image.SOPInstanceUID
    with pytest.raises(ReportBuildError, match=r"no SOPInstanceUID; only images from a PACS"):
        build_report(image, _facts(), device_uid=DEVICE)


def test_a_probability_out_of_range_is_refused(dicom_dir: Path) -> None:
    with pytest.raises(ReportBuildError, match=r"probability 1.5 .* not in \[0, 1\]"):
        build_report(_header(dicom_dir), _facts(probability=1.5), device_uid=DEVICE)


def test_the_finding_code_is_the_standard_one() -> None:
    # The concept names come from pydicom's DICOM code dictionary; the finding from SCT.
    assert codes.DCM.Finding.value == "121071"
    assert codes.DCM.Probability.value == "122157"
