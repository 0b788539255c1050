"""`reports resend`, then a real send pass to storescp; `check`'s C-ECHO against real peers."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from db.models import ReportStatus
from db.types import utcnow
from tests.cli_runner import run_cli
from tests.integration.pacs.conftest import StoreSCP, dicom_tool
from tests.integration.pacs.screened import report_config, scan_row, screened_dicom
from tests.processes import free_port, wait_until
from worker.pacs.aet import Destination
from worker.pacs.sending import send_due_reports

pytestmark = pytest.mark.integration
CHEST = "cr_chest_pa_mono1_j2k_lossless.dcm"


def _received_uids(scp: StoreSCP) -> list[str]:
    return [str(dcmread(p).SOPInstanceUID) for p in sorted(scp.received.iterdir())]


def test_a_given_up_report_is_resent_and_delivered_as_the_same_instance(
    database_url: str,
    session_factory: sessionmaker[Session],
    dicom_dir: Path,
    tmp_path: Path,
    storescp: StoreSCP,
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    closed = Destination("PACS", "127.0.0.1", free_port())  # nobody listens there
    start = utcnow()
    send_due_reports(session_factory, report_config(tmp_path, closed, max_attempts=2), now=start)
    send_due_reports(
        session_factory,
        report_config(tmp_path, closed, max_attempts=2),
        now=start + timedelta(seconds=31),
    )
    given_up = scan_row(session_factory, scan_id)
    assert given_up.report_status is ReportStatus.FAILED
    assert given_up.report_attempts == 2
    uid = given_up.report_sop_instance_uid
    assert uid

    env = {"CXR_DATABASE_URL": database_url}
    out = run_cli("reports", "resend", "--failed", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"queued 1 report to send again, was 1 failed: scan {scan_id}")

    summary = send_due_reports(
        session_factory, report_config(tmp_path, storescp.destination, max_attempts=2)
    )
    assert summary.sent == [scan_id]
    delivered = scan_row(session_factory, scan_id)
    assert delivered.report_status is ReportStatus.SENT
    assert delivered.report_attempts == 1, "a fresh count after the re-send"
    assert delivered.report_error is None
    assert _received_uids(storescp) == [uid]

    # A sent report named by id goes out again: the same instance, not a copy.
    again = run_cli("reports", "resend", str(scan_id), cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "was 1 sent" in again.stdout
    assert send_due_reports(
        session_factory, report_config(tmp_path, storescp.destination, max_attempts=2)
    ).sent == [scan_id]
    assert set(_received_uids(storescp)) == {uid}

    listed = run_cli("reports", "list", "--format", "json", cwd=tmp_path, env=env)
    [row] = json.loads(listed.stdout)["reports"]
    assert (row["scan_id"], row["report_status"], row["report_sop_instance_uid"]) == (
        scan_id,
        "sent",
        uid,
    )


# --- check: C-ECHO of the report destination -------------------------------------------


def _check(
    tmp_path: Path, destination: str | None, *options: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`cxr-screen check` with a migrated SQLite database and reports on (or off)."""
    settings = {"CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'cxr.db'}", **env}
    if destination is not None:
        settings |= {
            "CXR_REPORTS_ENABLED": "true",
            "CXR_REPORT_DESTINATION": destination,
            "CXR_DICOM_TIMEOUT_S": settings.get("CXR_DICOM_TIMEOUT_S", "5"),
        }
    upgraded = run_cli("db", "upgrade", cwd=tmp_path, env=settings)
    assert upgraded.returncode == 0, upgraded.stderr
    return run_cli("check", *options, cwd=tmp_path, env=settings)


def _reports_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line[5:].startswith("reports ")
    ]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


def test_check_passes_when_the_destination_answers_c_echo(
    tmp_path: Path, storescp: StoreSCP
) -> None:
    result = _check(tmp_path, str(storescp.destination))
    assert result.returncode == 0, result.stdout + result.stderr
    assert _reports_line(result) == (
        f"ok   reports    report destination {storescp.destination} answers C-ECHO "
        "(calling AE title CXR_SCREEN)"
    )


def test_check_fails_when_nothing_listens_at_the_destination(tmp_path: Path) -> None:
    destination = f"PACS@127.0.0.1:{free_port()}"
    result = _check(tmp_path, destination)
    assert result.returncode == 1
    line = _reports_line(result)
    assert line.startswith(f"FAIL reports    report destination {destination} is not reachable")
    assert "Connection refused" in line
    assert "check that the PACS is running" in line
    assert line in result.stderr, "problems go to stderr"


def test_check_local_leaves_the_pacs_out_for_health_checks(tmp_path: Path) -> None:
    # A PACS outage delays reports (they are retried); the service itself is healthy.
    result = _check(tmp_path, f"PACS@127.0.0.1:{free_port()}", "--local", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reports" not in result.stdout + result.stderr


def test_check_fails_when_the_destination_takes_the_connection_but_never_answers(
    tmp_path: Path,
) -> None:
    with socket.socket() as silent:  # listening, never accepting: the kernel takes the SYN
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        destination = f"PACS@127.0.0.1:{silent.getsockname()[1]}"
        result = _check(tmp_path, destination, CXR_DICOM_TIMEOUT_S="1")
    assert result.returncode == 1
    line = _reports_line(result)
    assert f"report destination {destination} took the connection but did not answer" in line
    assert "within 1 s" in line
    assert "CXR_DICOM_TIMEOUT_S" in line


@contextmanager
def _storescp(workdir: Path, *options: str) -> Iterator[int]:
    """DCMTK's storescp with these options on a free loopback port; yields the port."""
    port = free_port()
    workdir.mkdir(parents=True)
    with (workdir / "storescp.log").open("wb") as log:
        process = subprocess.Popen(
            [dicom_tool("storescp", "dcmtk"), *options, str(port)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: _listening(port), timeout=20, what=f"storescp on port {port}")
            yield port
        finally:
            process.terminate()
            process.wait(10)


# A storescp profile that takes C-ECHO and DX images, not Structured Reports.
NO_SR_PROFILE = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[EchoAndImages]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = DigitalXRayImageStorageForPresentation\\Uncompressed
[[Profiles]]
[NoReports]
PresentationContexts = EchoAndImages
"""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_check_fails_when_the_destination_refuses_the_association(tmp_path: Path) -> None:
    with _storescp(tmp_path / "storescp", "--refuse") as port:
        result = _check(tmp_path, f"PACS@127.0.0.1:{port}")
    assert result.returncode == 1
    line = _reports_line(result)
    assert f"report destination PACS@127.0.0.1:{port} refused the association (" in line
    assert "Rejected (Permanent)" in line
    assert "'CXR_SCREEN' (CXR_DICOM_AE_TITLE)" in line


def test_check_fails_when_the_destination_would_refuse_reports(tmp_path: Path) -> None:
    profile = tmp_path / "no-sr.cfg"
    profile.write_text(NO_SR_PROFILE)
    with _storescp(tmp_path / "storescp", "--config-file", str(profile), "NoReports") as port:
        result = _check(tmp_path, f"PACS@127.0.0.1:{port}")
    assert result.returncode == 1
    line = _reports_line(result)
    assert f"report destination PACS@127.0.0.1:{port} answers C-ECHO but does not accept " in line
    assert "Comprehensive SR Storage (1.2.840.10008.5.1.4.1.1.88.33)" in line
    assert "allow that SOP class for AE title CXR_SCREEN" in line


@contextmanager
def _strict_orthanc(workdir: Path, *, known_ae: str) -> Iterator[int]:
    """An Orthanc that answers only the modalities it knows (only `known_ae`); its DICOM port."""
    binary = dicom_tool("Orthanc", "orthanc")
    port, http_port = free_port(), free_port()
    (workdir / "logs").mkdir(parents=True)
    config = {
        "Name": "strict",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": http_port,
        "DicomPort": port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomModalities": {"cxr": [known_ae, "127.0.0.1", 104]},
        "Plugins": [],
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    with (workdir / "orthanc.out").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--logdir={workdir / 'logs'}", str(workdir / "orthanc.json")],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: _listening(port), timeout=30, what=f"Orthanc on port {port}")
            yield port
        finally:
            process.terminate()
            process.wait(20)


def test_check_names_the_ae_title_a_strict_pacs_does_not_know(tmp_path: Path) -> None:
    with _strict_orthanc(tmp_path / "orthanc", known_ae="CXR_KNOWN") as port:
        refused = _check(tmp_path, f"ORTHANC@127.0.0.1:{port}")
        wrong_called = _check(tmp_path, f"PACS@127.0.0.1:{port}", CXR_DICOM_AE_TITLE="CXR_KNOWN")
        known = _check(tmp_path, f"ORTHANC@127.0.0.1:{port}", CXR_DICOM_AE_TITLE="CXR_KNOWN")
    assert refused.returncode == 1
    line = _reports_line(refused)
    assert "refused the association (Rejected (Permanent), DUL service-user: Calling AE title " in (
        line
    )
    assert "add this node's AE title 'CXR_SCREEN' (CXR_DICOM_AE_TITLE) to the destination" in line

    assert wrong_called.returncode == 1
    assert "Called AE title not recognised" in _reports_line(wrong_called)
    assert f"the node at 127.0.0.1:{port} is not 'PACS'" in _reports_line(wrong_called)

    assert known.returncode == 0, known.stdout + known.stderr
    assert "answers C-ECHO (calling AE title CXR_KNOWN)" in _reports_line(known)


def test_check_says_reports_are_off_and_refuses_reports_on_without_a_destination(
    tmp_path: Path,
) -> None:
    off = _check(tmp_path, None)
    assert off.returncode == 0, off.stdout + off.stderr
    assert _reports_line(off).startswith("ok   reports    reports are off (CXR_REPORTS_ENABLED)")

    nowhere = run_cli(
        "check",
        cwd=tmp_path,
        env={"CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'cxr.db'}", "CXR_REPORTS_ENABLED": "1"},
    )
    assert nowhere.returncode == 2
    assert nowhere.stderr.startswith("cxr-screen: error: invalid configuration: ")
    assert "CXR_REPORTS_ENABLED is true but no destination is set" in nowhere.stderr
