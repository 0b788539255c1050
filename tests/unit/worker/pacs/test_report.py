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


def _items(report: Dataset) -> dict[str, Dataset]:
    """Every content item of the tree by its concept name's meaning (they are unique here)."""
    found: dict[str, Dataset] = {}

    def walk(items: list[Dataset]) -> None:
        for item in items:
            found[item.ConceptNameCodeSequence[0].CodeMeaning] = item
            walk(list(item.get("ContentSequence", [])))

    walk(list(report.ContentSequence))
    return found


def test_the_report_holds_the_result_and_says_it_is_not_a_diagnosis(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    report = _round_trip(build_report(image, _facts(), device_uid=DEVICE))
    items = _items(report)

    assert report.ConceptNameCodeSequence[0].CodeMeaning == "Chest CAD Report"
    finding = items["Finding"].ConceptCodeSequence[0]
    assert (finding.CodeValue, finding.CodingSchemeDesignator) == ("233604007", "SCT")
    assert items["Presence of property"].ConceptCodeSequence[0].CodeMeaning == "Present"
    probability = items["Probability"].MeasuredValueSequence[0]
    assert float(probability.NumericValue) == pytest.approx(0.8734)
    assert probability.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert float(items["CAD Operating Point"].MeasuredValueSequence[0].NumericValue) == 0.35
    assert items["Algorithm Name"].TextValue == "cxr-screen"
    assert items["Algorithm Version"].TextValue == "20261129-0200"
    assert items["Device Observer Model Name"].TextValue == "20261129-0200"
    assert items["Comment"].TextValue.startswith(f"{DISCLAIMER}.")
    assert "0.873" in items["Comment"].TextValue
    source = items["Source image"]
    assert source.RelationshipType == "INFERRED FROM"
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert (report.VerificationFlag, report.CompletionFlag) == ("UNVERIFIED", "COMPLETE")
    assert report.PreliminaryFlag == "PRELIMINARY"


def test_a_negative_verdict_says_absent(dicom_dir: Path) -> None:
    report = build_report(
        _header(dicom_dir), _facts(label="NORMAL", probability=0.12), device_uid=DEVICE
    )
    items = _items(report)
    assert items["Presence of property"].ConceptCodeSequence[0].CodeMeaning == "Absent"
    assert "not PNEUMONIA" in items["Comment"].TextValue


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
    finding = _items(report)["Finding"].ConceptCodeSequence[0]
    assert (finding.CodingSchemeDesignator, finding.CodeMeaning) == ("99CXR", "Tuberculosis")
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
