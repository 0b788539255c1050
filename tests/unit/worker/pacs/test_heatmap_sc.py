"""The heatmap Secondary Capture: the picture as given, study membership, stable UIDs, refusals."""

from __future__ import annotations

import logging
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from worker.pacs.aet import is_uid
from worker.pacs.errors import ReportBuildError
from worker.pacs.heatmap_sc import SERIES_NUMBER, build_heatmap_sc, heatmap_uids
from worker.pacs.report import ResultFacts, device_observer_uid, report_uids

DEVICE = device_observer_uid("CXR_SCREEN")
CHEST = "cr_chest_pa_mono1_j2k_lossless.dcm"


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


def _header(dicom_dir: Path, name: str = CHEST) -> Dataset:
    return dcmread(dicom_dir / name, stop_before_pixels=True)


def _picture(rows: int = 40, columns: int = 64) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (rows, columns, 3), dtype=np.uint8)


def _round_trip(instance: Dataset) -> Dataset:
    buffer = BytesIO()
    instance.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_the_picture_is_stored_as_given_with_its_caption_declared(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    picture = _picture()
    stored = _round_trip(build_heatmap_sc(image, picture, _facts(), device_uid=DEVICE))
    assert stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert (stored.Rows, stored.Columns) == (40, 64)
    assert (stored.BitsAllocated, stored.PhotometricInterpretation) == (8, "RGB")
    assert np.array_equal(stored.pixel_array, picture)
    assert stored.BurnedInAnnotation == "YES"
    assert list(stored.ImageType) == ["DERIVED", "SECONDARY"]
    assert stored.ConversionType == "WSD"
    assert (stored.Manufacturer, stored.ManufacturerModelName) == ("cxr-screen", "cxr-screen")
    assert stored.DeviceUID == DEVICE
    assert "20261129-0200" in stored.DerivationDescription
    assert stored.DerivationDescription.startswith("AI result, not a diagnosis")
    (source,) = stored.SourceImageSequence
    assert source.ReferencedSOPClassUID == image.SOPClassUID
    assert source.ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert source.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert "PixelSpacing" not in stored, "the picture is scaled: the image's spacing is not its"


def test_the_heatmap_joins_the_image_study_in_a_series_of_its_own(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    facts = _facts()
    heatmap = build_heatmap_sc(image, _picture(), facts, device_uid=DEVICE)
    assert heatmap.StudyInstanceUID == image.StudyInstanceUID
    assert heatmap.SeriesInstanceUID not in (image.SeriesInstanceUID, report_uids(image, facts)[0])
    assert heatmap.SeriesNumber == SERIES_NUMBER == 9902
    assert heatmap.SeriesDescription == "cxr-screen AI heatmap, not for diagnosis"


def test_uids_are_the_same_on_a_rebuild_and_differ_per_model_version(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    first = build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
    again = build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
    other = build_heatmap_sc(image, _picture(), _facts(model_version="v2"), device_uid=DEVICE)
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == heatmap_uids(image, _facts())
    assert first.SOPInstanceUID == again.SOPInstanceUID
    assert is_uid(first.SOPInstanceUID)
    assert is_uid(first.SeriesInstanceUID)
    assert first.SOPInstanceUID != other.SOPInstanceUID
    assert first.SeriesInstanceUID == other.SeriesInstanceUID, "one series per study"
    assert first.SOPInstanceUID != report_uids(image, _facts())[1], "not the report's UID"


def test_only_the_patient_and_study_identifiers_are_copied(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    image.PatientAge = "086Y"
    image.OtherPatientIDs = "OTHER-42"
    image.InstitutionName = "General Hospital"
    image.ReferringPhysicianName = "Doe^Jane"
    image.OperatorsName = "Roe^Rick"
    image.StationName = "XR-ROOM-3"
    heatmap = build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert heatmap[keyword].value == image[keyword].value
    for keyword in ("AccessionNumber", "StudyID", "StudyDate", "StudyTime"):
        assert heatmap[keyword].value == image[keyword].value
    for keyword in ("PatientAge", "OtherPatientIDs", "InstitutionName", "OperatorsName"):
        assert keyword not in heatmap
    assert not heatmap.ReferringPhysicianName
    text = str(heatmap)
    for value in ("OTHER-42", "General Hospital", "Doe^Jane", "Roe^Rick", "086Y", "XR-ROOM-3"):
        assert value not in text


def test_values_highdicom_refuses_are_copied_or_emptied_and_nothing_is_logged(
    dicom_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A de-identified file: hashed birth date, a 56-character Accession Number and a
    # patient name without components (which highdicom's SC constructor refuses).
    image = _header(dicom_dir, "dx_chest_pa_mono1_inverse_plut_j2k.dcm")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        heatmap = build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
    assert not heatmap.PatientBirthDate
    assert heatmap.PatientName == image.PatientName, "copied as is: the PACS matches on it"
    assert heatmap.AccessionNumber == image.AccessionNumber
    said = " ".join([str(w.message) for w in caught] + [r.getMessage() for r in caplog.records])
    for value in (str(image.PatientName), str(image.AccessionNumber), str(image.PatientID)):
        assert value not in said


def test_the_orientation_is_the_image_one_or_empty(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    assert list(image.PatientOrientation) == ["L", "F"]
    heatmap = build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
    assert list(heatmap.PatientOrientation) == ["L", "F"]
    for unusable in (None, "", ["FL", "A"], ["L"]):
        image.PatientOrientation = unusable
        heatmap = build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
        assert "PatientOrientation" in heatmap, "Type 2: present, empty when unknown"
        assert not heatmap.PatientOrientation
    image.AnatomicalOrientationType = "QUADRUPED"
    image.PatientOrientation = ["CR", "V"]
    heatmap = build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
    assert list(heatmap.PatientOrientation) == ["CR", "V"]
    assert heatmap.AnatomicalOrientationType == "QUADRUPED"


def test_a_lossy_source_makes_a_lossy_heatmap(dicom_dir: Path) -> None:
    # PS3.3 C.7.6.1.1.5: an image derived from a lossy compressed one says so.
    lossy = _header(dicom_dir, "cr_chest_sc_jpeg_baseline.dcm")
    heatmap = build_heatmap_sc(lossy, _picture(), _facts(), device_uid=DEVICE)
    assert heatmap.LossyImageCompression == "01"
    lossless = _header(dicom_dir)
    heatmap = build_heatmap_sc(lossless, _picture(), _facts(), device_uid=DEVICE)
    assert "LossyImageCompression" not in heatmap


@pytest.mark.parametrize(
    ("picture", "what"),
    [
        (np.zeros((8, 8, 3), dtype=np.uint16), r"uint16 \(8, 8, 3\)"),
        (np.zeros((8, 8), dtype=np.uint8), r"uint8 \(8, 8\)"),
        (np.zeros((8, 8, 4), dtype=np.uint8), r"uint8 \(8, 8, 4\)"),
        (np.zeros((0, 8, 3), dtype=np.uint8), r"uint8 \(0, 8, 3\)"),
        (np.zeros((8, 8, 3), dtype=np.float32), r"float32 \(8, 8, 3\)"),
    ],
)
def test_a_picture_that_is_not_rgb_uint8_is_refused(
    dicom_dir: Path, picture: npt.NDArray[np.generic], what: str
) -> None:
    with pytest.raises(ReportBuildError, match=rf"picture is {what}, not an RGB uint8 array"):
        build_heatmap_sc(_header(dicom_dir), picture, _facts(), device_uid=DEVICE)


def test_a_header_without_uids_cannot_have_a_heatmap(dicom_dir: Path) -> None:
    image = _header(dicom_dir)
    del image.StudyInstanceUID
    with pytest.raises(ReportBuildError, match=r"no StudyInstanceUID; only images from a PACS"):
        build_heatmap_sc(image, _picture(), _facts(), device_uid=DEVICE)
