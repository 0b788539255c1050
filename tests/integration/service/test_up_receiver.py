"""End to end: `cxr-screen up` with the receiver on, a modality pushing with storescu, and
the results going back to a PACS (DCMTK storescp): a TID 1500 report for every chest,
the heatmap as a Secondary Capture for the flagged ones, each valid to dciodvfy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import (
    Duplicate,
    HeatmapStatus,
    ModelVersion,
    Prediction,
    ReportStatus,
    Scan,
    ScanStatus,
)
from db.session import make_engine, make_session_factory, session_scope
from tests.cli_runner import run_cli
from tests.integration.pacs.conftest import (
    SENDER_AE,
    StoreSCP,
    dicom_tool,
    receiver_env,
    storescu,
)
from tests.integration.service.test_up import FAST
from tests.processes import Service, free_port, wait_until
from tests.tiny_model import TINY_SIZE, register_model
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput, Predictor, Prepared, load_verified, prepare_file

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"

pytestmark = pytest.mark.integration

# What each real file of ../shared/data/dicom must end as: the chests (the veterinary
# lateral thorax included: its header says THORAX) screened, the hip and the broken hip
# rejected on their headers as not a chest.
EXPECTED = {
    "cr_chest_pa_mono1_j2k_lossless.dcm": ScanStatus.DONE,
    "dx_chest_pa_mono1_inverse_plut_j2k.dcm": ScanStatus.DONE,
    "cr_chest_sc_jpeg_baseline.dcm": ScanStatus.DONE,
    "dx_thorax_lateral_animal.dcm": ScanStatus.DONE,
    "cr_hip_jpeg_lossless.dcm": ScanStatus.REJECTED,
    "broken_cr_hip_jpeg_extended.dcm": ScanStatus.REJECTED,
}


def _push(files: list[Path], port: int, workdir: Path) -> None:
    sent = storescu(files, port, tmp_path=workdir)
    assert sent.returncode == 0, sent.stderr


def _flag_half(factory: sessionmaker[Session], chests: list[Path]) -> set[str]:
    """Set the tiny model's threshold between its answers, so that half the chests are
    flagged; returns the SOP Instance UIDs of those that will be."""
    with factory() as session:
        row = session.scalars(select(ModelVersion)).one()
        artifact = Path(row.artifact_path)
    model = load_verified(
        artifact, checksum=hashlib.sha256(artifact.read_bytes()).hexdigest(), name="tiny"
    )
    model_input = ModelInput.of(TINY_SIZE, DecodeOptions())
    answers: dict[str, float] = {}
    for path in chests:
        prepared = prepare_file(path, model_input)
        assert isinstance(prepared, Prepared), path
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        answers[uid] = float(Predictor(model)(prepared.image[None]).values[0][1])
    ranked = sorted(answers.values())
    half = len(ranked) // 2
    assert ranked[half - 1] < ranked[half], "the tiny model must tell these files apart"
    threshold = (ranked[half - 1] + ranked[half]) / 2
    with session_scope(factory) as session:
        session.execute(update(ModelVersion).values(threshold=threshold))
    return {uid for uid, p in answers.items() if p >= threshold}


def _validation_errors(path: Path) -> list[str]:
    checked = subprocess.run(
        [dicom_tool("dciodvfy", "dicom3tools"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = checked.stdout + checked.stderr
    return [
        line
        for line in said.splitlines()
        # The de-identified dx_chest_pa file's Accession Number is a 56-character hash
        # where SH allows 16; it is copied as it is (the PACS matches on it), and
        # dciodvfy finds the same error in the image itself.
        if line.startswith("Error") and "Accession Number" not in line
        and "invalid data values" not in line
    ]  # fmt: skip


def _source_uid(instance: Dataset) -> str:
    """The SOP Instance UID of the image a report or heatmap image is about."""
    if instance.SOPClassUID == SECONDARY_CAPTURE:
        return str(instance.SourceImageSequence[0].ReferencedSOPInstanceUID)
    evidence = instance.CurrentRequestedProcedureEvidenceSequence[0]
    return str(
        evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    )


def test_up_receives_screens_and_sends_reports_and_heatmaps_to_the_pacs(
    shared_data: Path, tmp_path: Path
) -> None:
    dicom_tool("storescu", "dcmtk")
    home = tmp_path / "site"
    home.mkdir()
    url = f"sqlite:///{home / 'var' / 'cxr-screen.db'}"
    (home / "var").mkdir()
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    register_model(sessions, model_dir=home / "models", version="tiny-1")
    files = [shared_data / "dicom" / name for name in EXPECTED]
    chests = [shared_data / "dicom" / n for n, s in EXPECTED.items() if s is ScanStatus.DONE]
    flagged = _flag_half(sessions, chests)

    pacs = StoreSCP(tmp_path / "pacs")
    port = free_port()
    env = {
        **FAST,
        **receiver_env(home / "inbox", port, SENDER_AE),
        "CXR_RECEIVE_ENABLED": "true",
        "CXR_REPORTS_ENABLED": "true",
        "CXR_REPORT_DESTINATION": f"{pacs.ae_title}@127.0.0.1:{pacs.port}",
        "CXR_REPORT_INTERVAL_S": "2",
        # CXR_HEATMAPS left at its default: flagged.
    }
    service = Service(["up"], cwd=home, env=env, log=tmp_path / "up.log")
    try:
        service.wait_for_log("ready.", timeout=120)  # the screening worker
        service.wait_for_log("receiving DICOM as", timeout=60)
        assert f"AE CXR_SCREEN on 127.0.0.1:{port}" in service.output()

        _push(files, port, tmp_path)

        def statuses() -> dict[str, ScanStatus]:
            with sessions() as session:
                # The receiver names files by SOP Instance UID; map back by the UID.
                return {
                    str(s.sop_instance_uid): s.status
                    for s in session.scalars(select(Scan))
                    if s.status in (ScanStatus.DONE, ScanStatus.REJECTED, ScanStatus.FAILED)
                }

        wait_until(lambda: len(statuses()) == len(files), timeout=240, what="six results")
        with sessions() as session:
            scans = list(session.scalars(select(Scan)))
        assert len(scans) == len(files)
        by_uid = {s.sop_instance_uid: s for s in scans}
        for path in files:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert by_uid[uid].status is EXPECTED[path.name], (path.name, by_uid[uid].error)
            assert by_uid[uid].source_path.endswith(f"{uid}.dcm")

        # Back to the PACS: a report for every chest, a heatmap image for the flagged.
        def sent() -> int:
            with sessions() as session:
                return int(
                    session.scalar(
                        select(func.count())
                        .select_from(Scan)
                        .where(Scan.report_status == ReportStatus.SENT)
                    )
                    or 0
                )

        wait_until(lambda: sent() == len(chests), timeout=180, what="four reports sent")
        received = sorted(p for p in pacs.received.rglob("*") if p.is_file())
        instances = {path: dcmread(path) for path in received}
        reports = {
            _source_uid(d): d for d in instances.values() if d.SOPClassUID == COMPREHENSIVE_SR
        }
        heatmaps = {
            _source_uid(d): d for d in instances.values() if d.SOPClassUID == SECONDARY_CAPTURE
        }
        assert len(instances) == len(chests) + len(flagged), sorted(p.name for p in received)
        chest_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in chests}
        assert set(reports) == set(chest_uids), "one report per chest, none for the hips"
        assert set(heatmaps) == flagged, "a heatmap image for each flagged chest only"
        for uid, image_path in chest_uids.items():
            study = str(dcmread(image_path, stop_before_pixels=True).StudyInstanceUID)
            assert reports[uid].StudyInstanceUID == study
            if uid in heatmaps:
                assert heatmaps[uid].StudyInstanceUID == study
                assert heatmaps[uid].BurnedInAnnotation == "YES"
        for path in received:
            assert _validation_errors(path) == [], path.name
        with sessions() as session:
            for scan in session.scalars(select(Scan)):
                wants = scan.sop_instance_uid in flagged
                assert (scan.heatmap_status is HeatmapStatus.DONE) is wants, scan.heatmap_error
                if wants:
                    assert Path(str(scan.heatmap_path)).is_file()
                    assert (
                        scan.heatmap_sop_instance_uid
                        == heatmaps[scan.sop_instance_uid].SOPInstanceUID
                    )

        # The results table says where each result went.
        listed = run_cli("results", "--format", "jsonl", cwd=home, env=env)
        assert listed.returncode == 0, listed.stderr
        states = {
            row["sop_instance_uid"]: (row["report_status"], row["heatmap_status"])
            for row in map(json.loads, listed.stdout.splitlines())
        }
        assert states == {
            uid: ("sent", "done" if uid in flagged else None) if uid in chest_uids else (None, None)
            for uid in states
        }
        assert set(states) >= set(chest_uids)
        table = run_cli("results", cwd=home, env=env)
        assert "report" in table.stdout
        assert "heatmap" in table.stdout

        # The receiver is supervised like the other children: killed, it comes back.
        started = re.findall(r"started receiver \(pid (\d+)\)", service.output())
        assert len(started) == 1
        os.kill(int(started[0]), signal.SIGKILL)
        wait_until(
            lambda: service.output().count("receiving DICOM as") == 2,
            timeout=90,
            what="the receiver to be restarted",
        )
        assert "receiver exited (-9); restarting" in service.output()

        # The PACS sends the study again, byte for byte: recorded as duplicates, not
        # screened a second time.
        _push(files, port, tmp_path)

        def duplicates() -> int:
            with sessions() as session:
                return int(session.scalar(select(func.count()).select_from(Duplicate)) or 0)

        wait_until(lambda: duplicates() == len(files), timeout=120, what="six duplicates")
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Scan)) == len(files)
            predictions = list(session.scalars(select(Prediction.scan_id)))
        done = [s.id for s in scans if s.status is ScanStatus.DONE]
        assert sorted(predictions) == sorted(done), "each chest screened exactly once"
        assert sent() == len(chests)
        again = sorted(p for p in pacs.received.rglob("*") if p.is_file())
        assert again == received, "nothing sent to the PACS twice"
    finally:
        code = service.stop(timeout=90)
        pacs.stop()
        engine.dispose()
    assert code == 0, service.output()[-3000:]
    assert "cxr-screen stopped" in service.output()
