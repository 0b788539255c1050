"""End to end with a real PACS: Orthanc sends studies, cxr-screen screens them, SRs go back."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Prediction, ReportStatus, Scan, ScanStatus
from db.scans import record_scan
from db.session import make_engine, make_session_factory, session_scope
from tests.conftest import fresh_database
from tests.integration.pacs.conftest import (
    RECEIVER_AE,
    Orthanc,
    RunningReceiver,
    dicom_tool,
)
from tests.processes import wait_until
from tests.tiny_model import register_model
from worker.filing import Filing
from worker.imaging import DecodeOptions
from worker.inference import ModelCache
from worker.pacs.aet import Destination
from worker.pacs.report import DISCLAIMER
from worker.pacs.sending import ReportConfig, send_due_reports
from worker.screening import ScreeningContext, screen_batch

pytestmark = pytest.mark.integration
STUDIES = ("cr_chest_pa_mono1_j2k_lossless.dcm", "cr_chest_sc_jpeg_baseline.dcm")


@pytest.fixture
def orthanc(receiver: RunningReceiver, tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc with cxr-screen's receiver configured as the DICOM modality `cxr`."""
    pacs = Orthanc(
        tmp_path / "orthanc", modalities={"cxr": (RECEIVER_AE, "127.0.0.1", receiver.port)}
    )
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with fresh_database("sqlite", tmp_path) as url:
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield make_session_factory(engine)
        finally:
            engine.dispose()


def _screen(factory: sessionmaker[Session], files: list[Path], tmp_path: Path) -> list[int]:
    """What the watcher and a worker do with received files: record, screen, archive."""
    register_model(factory, model_dir=tmp_path / "models", version="tiny-1", threshold=0.5)
    with session_scope(factory) as session:
        ids = [
            record_scan(
                session,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                source_path=str(path),
                size_bytes=path.stat().st_size,
            )[0].id
            for path in files
        ]
    with ThreadPoolExecutor(2) as executor:
        context = ScreeningContext(
            session_factory=factory,
            models=ModelCache(factory),
            decode_options=DecodeOptions(pseudonym_key=b"test-key"),
            executor=executor,
            worker_name="test:1",
            filing=Filing(
                inbox=tmp_path / "inbox",
                archive=tmp_path / "archive",
                quarantine=tmp_path / "quarantine",
            ),
        )
        report = screen_batch(context, ids)
    assert sorted(report.done) == sorted(ids), report.as_dict()
    return ids


def _items(report: Dataset) -> dict[str, Dataset]:
    found: dict[str, Dataset] = {}

    def walk(items: list[Dataset]) -> None:
        for item in items:
            found[item.ConceptNameCodeSequence[0].CodeMeaning] = item
            walk(list(item.get("ContentSequence", [])))

    walk(list(report.ContentSequence))
    return found


def test_a_study_from_the_pacs_comes_back_with_its_result_sr(
    receiver: RunningReceiver,
    orthanc: Orthanc,
    factory: sessionmaker[Session],
    dicom_dir: Path,
    tmp_path: Path,
) -> None:
    # The PACS holds two studies and pushes them to cxr-screen, as a routing rule would.
    studies = {}
    for name in STUDIES:
        stored = orthanc.post("/instances", (dicom_dir / name).read_bytes())
        studies[name] = stored["ParentStudy"]
    pushed = orthanc.post("/modalities/cxr/store", list(studies.values()))
    assert (pushed["InstancesCount"], pushed["FailedInstancesCount"]) == (2, 0)
    wait_until(lambda: len(receiver.files()) == 2, timeout=30, what="two files in the inbox")

    ids = _screen(factory, receiver.files(), tmp_path)
    config = ReportConfig(
        enabled=True,
        destination=Destination(orthanc.ae_title, "127.0.0.1", orthanc.dicom_port),
        calling_ae_title=RECEIVER_AE,
        report_dir=tmp_path / "archive" / "reports",
        retry_base_s=30,
        retry_max_s=3600,
        max_attempts=5,
        timeout=30,
    )
    summary = send_due_reports(factory, config)
    assert sorted(summary.sent) == sorted(ids), summary.as_dict()

    with factory() as session:
        scans = {s.sop_instance_uid: s for s in session.scalars(select(Scan))}
        predictions = {p.scan_id: p for p in session.scalars(select(Prediction))}
    for name, study_id in studies.items():
        image = dcmread(dicom_dir / name, stop_before_pixels=True)
        scan = scans[image.SOPInstanceUID]
        prediction = predictions[scan.id]
        assert (scan.status, scan.format) == (ScanStatus.DONE, "dicom")
        assert scan.report_status is ReportStatus.SENT
        assert scan.report_sent_at is not None

        # Read the study back from the PACS: the image and, beside it, our report.
        instances = orthanc.get(f"/studies/{study_id}/instances")
        assert len(instances) == 2
        tags = {
            orthanc.get(f"/instances/{i['ID']}/simplified-tags")["Modality"]: i["ID"]
            for i in instances
        }
        assert set(tags) == {image.Modality, "SR"}
        sr_tags = orthanc.get(f"/instances/{tags['SR']}/simplified-tags")
        assert sr_tags["StudyInstanceUID"] == image.StudyInstanceUID
        assert sr_tags["SeriesInstanceUID"] != image.SeriesInstanceUID
        assert sr_tags["SOPInstanceUID"] == scan.report_sop_instance_uid
        assert sr_tags["PatientID"] == image.PatientID
        assert sr_tags["SeriesDescription"] == "cxr-screen AI result (not a diagnosis)"

        data = orthanc.get_bytes(f"/instances/{tags['SR']}/file")
        assert scan.report_path
        # The same data set as the kept copy (the PACS writes its own file meta).
        assert dcmread(BytesIO(data)) == dcmread(scan.report_path), "the PACS holds the copy"
        report = hd.sr.srread(BytesIO(data))
        assert isinstance(report, hd.sr.ComprehensiveSR)
        assert isinstance(report.content, hd.sr.MeasurementReport)  # TID 1500
        (group,) = report.content.get_image_measurement_groups(
            referenced_sop_instance_uid=image.SOPInstanceUID
        )
        assert group.finding_type is not None
        assert group.finding_type.meaning == "Pneumonia"
        (presence,) = group.get_qualitative_evaluations()
        assert presence.value.meaning == (
            "Present" if prediction.label == "PNEUMONIA" else "Absent"
        )
        (probability,) = group.get_measurements(name=codes.DCM.Probability)
        assert probability.value == pytest.approx(prediction.probability, abs=1e-6)
        (threshold,) = group.get_measurements(name=codes.DCM.CADOperatingPoint)
        assert threshold.value == pytest.approx(prediction.threshold)
        items = _items(report)
        assert items["Algorithm Version"].TextValue == "tiny-1"
        assert items["Comment"].TextValue.startswith(DISCLAIMER)
        (source,) = group.source_images
        assert source.referenced_sop_instance_uid == image.SOPInstanceUID

    # The standard's validator finds nothing wrong with what the PACS holds.
    validator = dicom_tool("dciodvfy", "dicom3tools")
    sr_path = tmp_path / "from-orthanc.dcm"
    first_study = orthanc.get(f"/studies/{studies[STUDIES[0]]}/instances")
    sr_id = next(
        i["ID"]
        for i in first_study
        if orthanc.get(f"/instances/{i['ID']}/simplified-tags")["Modality"] == "SR"
    )
    sr_path.write_bytes(orthanc.get_bytes(f"/instances/{sr_id}/file"))
    checked = subprocess.run(
        [validator, str(sr_path)], capture_output=True, text=True, timeout=60, check=False
    )
    said = checked.stdout + checked.stderr
    assert "ComprehensiveSR" in said.splitlines(), said  # the IOD it validated against
    assert [line for line in said.splitlines() if "Error" in line] == []
