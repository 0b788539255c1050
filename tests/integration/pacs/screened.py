"""Report-sender test fixtures: a screened DICOM scan as the worker leaves it, a config."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from db.models import Scan, ScanStatus
from db.session import session_scope
from db.types import utcnow
from tests.factories import add_model_version, add_prediction, add_scan
from worker.pacs.aet import Destination
from worker.pacs.sending import ReportConfig

CHEST = "cr_chest_pa_mono1_j2k_lossless.dcm"


def report_config(
    tmp_path: Path, destination: Destination | None, **changes: object
) -> ReportConfig:
    """Reports on, to `destination`, kept under `tmp_path/reports`; `changes` override."""
    values: dict[str, object] = {
        "enabled": True,
        "destination": destination,
        "calling_ae_title": "CXR_SCREEN",
        "report_dir": tmp_path / "reports",
        "retry_base_s": 30.0,
        "retry_max_s": 3600.0,
        "max_attempts": 5,
        "timeout": 5.0,
    }
    values.update(changes)
    return ReportConfig(**values)  # type: ignore[arg-type]


def screened_dicom(
    factory: sessionmaker[Session], dicom_dir: Path, tmp_path: Path, name: str = CHEST
) -> int:
    """A done DICOM scan with its archived file and a prediction, as the worker leaves it."""
    archived = tmp_path / "archive" / name
    archived.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dicom_dir / name, archived)
    header = dcmread(archived, stop_before_pixels=True)
    with session_scope(factory) as session:
        scan = add_scan(
            session,
            format="dicom",
            status=ScanStatus.DONE,
            source_path=f"inbox/{name}",
            stored_path=str(archived),
            sop_instance_uid=header.SOPInstanceUID,
            study_instance_uid=header.StudyInstanceUID,
            finished_at=utcnow(),
        )
        add_prediction(session, scan=scan, model=add_model_version(session), probability=0.91)
        return scan.id


def scan_row(factory: sessionmaker[Session], scan_id: int) -> Scan:
    """The scan's row as it is now."""
    with factory() as session:
        scan = session.get(Scan, scan_id)
        assert scan is not None
        return scan
