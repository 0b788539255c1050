"""End to end: `cxr-screen up` with CXR_RECEIVE_ENABLED, a modality pushing with storescu."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from db.migrate import upgrade
from db.models import Duplicate, Prediction, Scan, ScanStatus
from db.session import make_engine, make_session_factory
from tests.integration.pacs.conftest import SENDER_AE, dicom_tool, receiver_env, storescu
from tests.integration.service.test_up import FAST
from tests.processes import Service, free_port, wait_until
from tests.tiny_model import register_model

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


def test_up_runs_the_receiver_and_screens_what_a_modality_pushes(
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

    port = free_port()
    env = {
        **FAST,
        **receiver_env(home / "inbox", port, SENDER_AE),
        "CXR_RECEIVE_ENABLED": "true",
    }
    files = [shared_data / "dicom" / name for name in EXPECTED]
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
    finally:
        code = service.stop(timeout=90)
        engine.dispose()
    assert code == 0, service.output()[-3000:]
    assert "cxr-screen stopped" in service.output()
