"""The report sender on both databases: statuses, claims, backoff, give-up, a real SCP."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import HeatmapStatus, ReportStatus, Scan, ScanStatus
from db.reports import claim_due_reports
from db.session import session_scope
from db.types import utcnow
from tests.factories import add_scan
from tests.integration.pacs.conftest import StoreSCP
from tests.integration.pacs.screened import report_config, scan_row, screened_dicom
from tests.integration.pacs.test_delivery import ReportsOnlySCP
from tests.processes import free_port
from worker.pacs.aet import Destination
from worker.pacs.sending import send_due_reports
from worker.pipeline.heatmap_picture import png_bytes, render

pytestmark = pytest.mark.integration
CHEST = "cr_chest_pa_mono1_j2k_lossless.dcm"


def _closed() -> Destination:
    return Destination("PACS", "127.0.0.1", free_port())  # nobody listens there


def test_only_screened_dicom_scans_get_a_report_status(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    dicom = screened_dicom(session_factory, dicom_dir, tmp_path)
    with session_scope(session_factory) as session:
        jpeg = add_scan(session, status=ScanStatus.DONE).id
        rejected = add_scan(session, format="dicom", status=ScanStatus.REJECTED).id
        queued = add_scan(session, format="dicom", status=ScanStatus.QUEUED).id

    summary = send_due_reports(session_factory, report_config(tmp_path, None, enabled=False))

    assert summary.marked == 1
    assert scan_row(session_factory, dicom).report_status is ReportStatus.DISABLED
    for other in (jpeg, rejected, queued):
        assert scan_row(session_factory, other).report_status is None


def test_results_from_while_reports_were_off_are_never_sent_later(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    old = screened_dicom(session_factory, dicom_dir, tmp_path)
    send_due_reports(session_factory, report_config(tmp_path, None, enabled=False))
    summary = send_due_reports(session_factory, report_config(tmp_path, _closed()))
    assert summary.marked == 0
    assert summary.retrying == []
    assert scan_row(session_factory, old).report_status is ReportStatus.DISABLED


def test_a_failed_send_backs_off_then_the_same_report_is_delivered(
    session_factory: sessionmaker[Session],
    dicom_dir: Path,
    tmp_path: Path,
    storescp: StoreSCP,
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    start = utcnow()

    first = send_due_reports(session_factory, report_config(tmp_path, _closed()), now=start)
    assert first.retrying == [scan_id]
    scan = scan_row(session_factory, scan_id)
    assert scan.report_status is ReportStatus.PENDING
    assert scan.report_attempts == 1
    assert scan.report_next_attempt_at == start + timedelta(seconds=30)
    assert scan.report_error
    assert "could not open an association with PACS@127.0.0.1" in scan.report_error
    kept = scan.report_path
    assert kept
    assert Path(kept).is_file(), "the report is kept even before it is delivered"
    uid = scan.report_sop_instance_uid

    soon = send_due_reports(session_factory, report_config(tmp_path, _closed()), now=start)
    assert soon.retrying == [], "not due yet: screening and other reports are not held up"

    later = start + timedelta(seconds=31)
    second = send_due_reports(session_factory, report_config(tmp_path, _closed()), now=later)
    assert second.retrying == [scan_id]
    scan = scan_row(session_factory, scan_id)
    assert scan.report_attempts == 2
    assert scan.report_next_attempt_at == later + timedelta(seconds=60), "the wait doubles"

    due = later + timedelta(seconds=61)
    third = send_due_reports(
        session_factory, report_config(tmp_path, storescp.destination), now=due
    )
    assert third.sent == [scan_id]
    scan = scan_row(session_factory, scan_id)
    assert scan.report_status is ReportStatus.SENT
    assert scan.report_sent_at is not None
    assert scan.report_error is None
    assert (scan.report_path, scan.report_sop_instance_uid) == (kept, uid)
    received = [dcmread(p) for p in storescp.received.iterdir()]
    assert [r.SOPInstanceUID for r in received] == [uid], "one instance, whatever the tries"
    assert received[0].Modality == "SR"

    assert (
        send_due_reports(session_factory, report_config(tmp_path, storescp.destination)).sent == []
    )


def test_a_report_is_given_up_after_the_last_attempt(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    summary = send_due_reports(session_factory, report_config(tmp_path, _closed(), max_attempts=1))
    assert summary.failed == [scan_id]
    scan = scan_row(session_factory, scan_id)
    assert scan.report_status is ReportStatus.FAILED
    assert scan.report_next_attempt_at is None


def test_a_scan_whose_file_is_not_dicom_fails_at_once(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    stored = scan_row(session_factory, scan_id).stored_path
    assert stored
    Path(stored).write_bytes(b"not a DICOM file at all")
    summary = send_due_reports(session_factory, report_config(tmp_path, _closed()))
    assert summary.failed == [scan_id]
    error = scan_row(session_factory, scan_id).report_error
    assert error
    assert f"scan {scan_id}: the archived image" in error
    assert "is not readable DICOM" in error


def test_a_missing_archived_file_is_retried_not_given_up(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    stored = scan_row(session_factory, scan_id).stored_path
    assert stored
    Path(stored).unlink()  # an archive share that is not mounted right now
    summary = send_due_reports(session_factory, report_config(tmp_path, _closed()))
    assert summary.retrying == [scan_id]
    error = scan_row(session_factory, scan_id).report_error
    assert error
    assert "is missing; check that the archive volume is mounted" in error


def test_a_claimed_report_is_not_claimed_twice(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    send_due_reports(session_factory, report_config(tmp_path, None, enabled=True))  # marks pending
    now: datetime = utcnow()
    with session_scope(session_factory) as session:
        first = claim_due_reports(session, now=now, lease=timedelta(minutes=5), limit=10)
    with session_scope(session_factory) as session:
        second = claim_due_reports(session, now=now, lease=timedelta(minutes=5), limit=10)
        after_lease = claim_due_reports(
            session, now=now + timedelta(minutes=6), lease=timedelta(minutes=5), limit=10
        )
    assert [job.scan_id for job in first] == [scan_id]
    assert first[0].probability == pytest.approx(0.91)
    assert first[0].positive_class == "PNEUMONIA"
    assert second == []
    assert [job.attempts for job in after_lease] == [2], "a dead sender's claim expires"
    with session_factory() as session:
        pending = session.scalars(
            select(Scan.id).where(Scan.report_status == ReportStatus.PENDING)
        ).all()
    assert pending == [scan_id]


def test_a_destination_host_that_does_not_resolve_is_retried_with_its_reason(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    nowhere = Destination("PACS", "pacs.invalid", 104)  # RFC 6761: never resolves
    summary = send_due_reports(session_factory, report_config(tmp_path, nowhere))
    assert summary.retrying == [scan_id]
    scan = scan_row(session_factory, scan_id)
    assert scan.report_status is ReportStatus.PENDING
    assert scan.report_next_attempt_at is not None
    assert "could not reach PACS@pacs.invalid:104" in str(scan.report_error)


def _with_heatmap(factory: sessionmaker[Session], scan_id: int, tmp_path: Path) -> Path:
    """Give the scan a made heatmap picture, as the worker leaves it."""
    picture = render(
        np.full((32, 32, 3), 128, np.uint8),
        np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32),
        "cxr-screen AI heatmap, not for diagnosis",
    )
    path = tmp_path / "archive" / "heatmap.png"
    path.write_bytes(png_bytes(picture))
    with session_scope(factory) as session:
        session.execute(
            update(Scan)
            .where(Scan.id == scan_id)
            .values(heatmap_status=HeatmapStatus.DONE, heatmap_path=str(path))
        )
    return path


def test_the_heatmap_image_goes_with_the_report(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path, storescp: StoreSCP
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    _with_heatmap(session_factory, scan_id, tmp_path)
    summary = send_due_reports(session_factory, report_config(tmp_path, storescp.destination))
    assert summary.sent == [scan_id]
    received = [dcmread(p) for p in storescp.received.rglob("*") if p.is_file()]
    classes = sorted(str(d.SOPClassUID) for d in received)
    assert classes == ["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.33"]
    scan = scan_row(session_factory, scan_id)
    (heatmap,) = [d for d in received if d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"]
    assert scan.heatmap_sop_instance_uid == heatmap.SOPInstanceUID
    kept = tmp_path / "reports" / f"{scan.received_at:%Y/%m/%d}" / f"{scan.sha256}.heatmap.dcm"
    assert dcmread(kept).SOPInstanceUID == heatmap.SOPInstanceUID


def test_a_report_whose_heatmap_was_refused_is_not_counted_delivered(
    session_factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path
) -> None:
    scan_id = screened_dicom(session_factory, dicom_dir, tmp_path)
    _with_heatmap(session_factory, scan_id, tmp_path)
    pacs = ReportsOnlySCP(tmp_path / "sr-only")
    try:
        summary = send_due_reports(session_factory, report_config(tmp_path, pacs.destination))
    finally:
        pacs.stop()
    assert summary.retrying == [scan_id]
    scan = scan_row(session_factory, scan_id)
    assert scan.report_status is ReportStatus.PENDING
    assert "does not accept Secondary Capture Image Storage" in str(scan.report_error)
