"""The SR and the heatmap SC of each real radiograph pass dciodvfy and parse back."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.sr.codedict import codes

from tests.integration.pacs.conftest import dicom_tool
from worker.pacs.heatmap_sc import SERIES_DESCRIPTION, build_heatmap_sc, heatmap_uids
from worker.pacs.report import ResultFacts, build_report, device_observer_uid

CHESTS = [
    "cr_chest_pa_mono1_j2k_lossless.dcm",
    "cr_chest_sc_jpeg_baseline.dcm",
    "dx_thorax_lateral_animal.dcm",
    "dx_chest_pa_mono1_inverse_plut_j2k.dcm",
]
DEVICE = device_observer_uid("CXR_SCREEN")

pytestmark = pytest.mark.integration


def _problems(path: Path) -> tuple[str, list[str]]:
    checked = subprocess.run(
        [dicom_tool("dciodvfy", "dicom3tools"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = checked.stdout + checked.stderr
    return said, [line for line in said.splitlines() if line.startswith("Error")]


def _facts(label: str) -> ResultFacts:
    return ResultFacts(
        label=label,
        positive_class="PNEUMONIA",
        probability=0.62 if label == "PNEUMONIA" else 0.2,
        threshold=0.5,
        model_version="tiny-1",
        scan_sha256="cd" * 32,
    )


def _assert_valid(said: str, errors: list[str], iod: str, name: str, dicom_dir: Path) -> None:
    assert iod in said.splitlines(), said  # the IOD it validated against
    if name.startswith("dx_chest_pa"):
        # This de-identified file's Accession Number is a 56-character hash where SH
        # allows 16. The instance copies it unchanged, as the PACS matches it to the
        # study on it; dciodvfy finds the same error in the image itself.
        assert all("Accession Number" in e or "invalid data values" in e for e in errors)
        _, image_errors = _problems(dicom_dir / name)
        assert any("Accession Number" in e for e in image_errors)
    else:
        assert errors == [], said


def _picture(rows: int = 120, columns: int = 200) -> npt.NDArray[np.uint8]:
    """An RGB picture with a caption band: what the heatmap renderer hands over."""
    y, x = np.mgrid[0:rows, 0:columns]
    picture = np.stack([x * 255 // columns, y * 255 // rows, (x + y) % 256], axis=-1)
    picture[-20:] = 0
    picture[-14:-6, 4:-4:3] = 255  # the "caption"
    return picture.astype(np.uint8)


@pytest.mark.parametrize("name", CHESTS)
@pytest.mark.parametrize("label", ["PNEUMONIA", "NORMAL"])
def test_the_report_is_a_valid_tid_1500_comprehensive_sr(
    dicom_dir: Path, tmp_path: Path, name: str, label: str
) -> None:
    image = dcmread(dicom_dir / name, stop_before_pixels=True)
    facts = _facts(label)
    report = build_report(image, facts, device_uid=DEVICE)
    path = tmp_path / "report.dcm"
    report.save_as(path, enforce_file_format=True)

    said, errors = _problems(path)
    _assert_valid(said, errors, "ComprehensiveSR", name, dicom_dir)

    parsed = hd.sr.srread(BytesIO(path.read_bytes()))
    assert isinstance(parsed, hd.sr.ComprehensiveSR)
    assert parsed.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    content = parsed.content
    assert isinstance(content, hd.sr.MeasurementReport)
    (group,) = content.get_image_measurement_groups(
        finding_type=hd.sr.CodedConcept("233604007", "SCT", "Pneumonia"),
        referenced_sop_instance_uid=str(image.SOPInstanceUID),
    )
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.value == (codes.SCT.Present if label == "PNEUMONIA" else codes.SCT.Absent)
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(facts.probability)
    (threshold,) = group.get_measurements(name=codes.DCM.CADOperatingPoint)
    assert threshold.value == pytest.approx(0.5)
    assert [m.unit.value for m in (probability, threshold)] == ["1", "1"]
    texts = {
        (i.ConceptNameCodeSequence[0].CodeMeaning, i.TextValue)
        for i in group[0].ContentSequence
        if i.ValueType == "TEXT"
    }
    assert {("Algorithm Name", "cxr-screen"), ("Algorithm Version", "tiny-1")} <= texts
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == image.SOPInstanceUID
    assert source.referenced_sop_class_uid == image.SOPClassUID
    (observer,) = content.get_observer_contexts(observer_type=codes.DCM.Device)
    assert observer.observer_identifying_attributes.uid == DEVICE
    assert (parsed.VerificationFlag, parsed.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")


@pytest.mark.parametrize("name", CHESTS)
def test_the_heatmap_is_a_valid_secondary_capture_in_the_study(
    dicom_dir: Path, tmp_path: Path, name: str
) -> None:
    image = dcmread(dicom_dir / name, stop_before_pixels=True)
    facts = _facts("PNEUMONIA")
    picture = _picture()
    heatmap = build_heatmap_sc(image, picture, facts, device_uid=DEVICE)
    path = tmp_path / "heatmap.dcm"
    heatmap.save_as(path, enforce_file_format=True)

    said, errors = _problems(path)
    _assert_valid(said, errors, "SCImage", name, dicom_dir)

    stored = dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # Explicit VR LE
    assert stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert stored.BurnedInAnnotation == "YES"
    assert list(stored.ImageType) == ["DERIVED", "SECONDARY"]
    assert stored.ConversionType == "WSD"
    assert stored.Manufacturer == "cxr-screen"
    assert (
        stored.SeriesDescription == SERIES_DESCRIPTION == "cxr-screen AI heatmap, not for diagnosis"
    )
    assert stored.SeriesNumber == 9902
    assert stored.StudyInstanceUID == image.StudyInstanceUID
    assert stored.SeriesInstanceUID != image.SeriesInstanceUID
    assert stored.PatientID == image.PatientID
    (source,) = stored.SourceImageSequence
    assert source.ReferencedSOPClassUID == image.SOPClassUID
    assert source.ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert (stored.PhotometricInterpretation, stored.SamplesPerPixel) == ("RGB", 3)
    assert np.array_equal(stored.pixel_array, picture), "the picture as rendered, lossless"
    if image.get("PatientOrientation"):
        assert list(stored.PatientOrientation) == list(image.PatientOrientation)
    else:
        assert not stored.PatientOrientation, "unknown orientation is left empty"

    again = build_heatmap_sc(image, picture, facts, device_uid=DEVICE)
    assert (again.SeriesInstanceUID, again.SOPInstanceUID) == heatmap_uids(image, facts)
    assert again.SOPInstanceUID == stored.SOPInstanceUID, "a rebuild is the same instance"
    report = build_report(image, facts, device_uid=DEVICE)
    assert report.StudyInstanceUID == stored.StudyInstanceUID
    assert report.SeriesInstanceUID != stored.SeriesInstanceUID, "a series of its own"
