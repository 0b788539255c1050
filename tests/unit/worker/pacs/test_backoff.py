"""Retry waits of the report sender, and where reports are kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db.reports import ReportJob
from worker.pacs.sending import ReportConfig, report_path


def _config(**changes: object) -> ReportConfig:
    values: dict[str, object] = {
        "enabled": True,
        "destination": None,
        "calling_ae_title": "CXR_SCREEN",
        "report_dir": Path("reports"),
        "retry_base_s": 30.0,
        "retry_max_s": 3600.0,
        "max_attempts": 72,
        "timeout": 30.0,
    }
    values.update(changes)
    return ReportConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (72, 3600), (10_000, 3600)],
)
def test_waits_double_up_to_the_maximum(attempts: int, seconds: float) -> None:
    assert _config().retry_delay(attempts) == timedelta(seconds=seconds)


def test_the_default_attempts_last_about_three_days() -> None:
    config = _config()
    total = sum((config.retry_delay(n) for n in range(1, 72)), timedelta())
    assert timedelta(days=2.5) < total < timedelta(days=3.5)


def test_a_claim_outlives_a_whole_run() -> None:
    config = _config(timeout=30.0, batch_limit=50)
    assert config.lease >= timedelta(seconds=(config.batch_limit + 1) * config.timeout)


def test_a_report_is_kept_beside_its_archived_image() -> None:
    job = ReportJob(
        scan_id=7,
        sha256="ab" * 32,
        received_at=datetime(2026, 11, 29, 23, 59, tzinfo=UTC),
        stored_path="archive/2026/11/29/" + "ab" * 32 + ".dcm",
        sop_instance_uid="1.2.3",
        attempts=1,
        report_path=None,
        report_sop_instance_uid=None,
        prediction_id=1,
        label="NORMAL",
        probability=0.1,
        threshold=0.5,
        model_version="v1",
        positive_class="PNEUMONIA",
    )
    assert report_path(Path("archive/reports"), job) == Path(
        "archive/reports/2026/11/29/" + "ab" * 32 + ".sr.dcm"
    )
