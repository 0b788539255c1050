"""Send due reports: claim, build (or reuse) each SR and heatmap image, C-STORE them, record
each outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session, sessionmaker

from db.heatmaps import record_heatmap_built
from db.reports import (
    ReportJob,
    claim_due_reports,
    mark_new_reports,
    record_report_built,
    record_report_failure,
    record_report_sent,
)
from db.session import session_scope
from db.types import utcnow
from worker.pacs.aet import Destination, parse_destination
from worker.pacs.delivery import StoreOutcome, store_reports
from worker.pacs.errors import DeliveryError, ReportBuildError
from worker.pacs.files import write_atomically
from worker.pacs.heatmap_sc import build_heatmap_sc
from worker.pacs.report import ResultFacts, build_report, device_observer_uid, quiet_pydicom
from worker.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """How reports are sent; see the CXR_REPORT_* settings."""

    enabled: bool
    destination: Destination | None
    calling_ae_title: str
    report_dir: Path
    retry_base_s: float
    retry_max_s: float
    max_attempts: int
    timeout: float
    batch_limit: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportConfig:
        """The sending configuration of these (validated) settings."""
        destination = settings.pacs.report_destination
        return cls(
            enabled=settings.pacs.reports_enabled,
            destination=parse_destination(destination) if destination else None,
            calling_ae_title=settings.pacs.dicom_ae_title,
            report_dir=settings.reports_path,
            retry_base_s=settings.pacs.report_retry_base_s,
            retry_max_s=settings.pacs.report_retry_max_s,
            max_attempts=settings.pacs.report_max_attempts,
            timeout=settings.pacs.dicom_timeout_s,
        )

    @property
    def lease(self) -> timedelta:
        """How long a claimed report is left alone: longer than a whole run can take.

        A run makes one association and one C-STORE per report, each bounded by the
        timeout; a sender that died mid-run leaves its reports to the next after this.
        """
        return timedelta(seconds=max(300.0, (self.batch_limit + 2) * self.timeout))

    def retry_delay(self, attempts: int) -> timedelta:
        """Exponential backoff: base, 2 x base, 4 x base ... capped at the maximum."""
        exponent = min(max(attempts - 1, 0), 32)  # 2**32 x base exceeds any sane cap
        return timedelta(seconds=min(self.retry_max_s, self.retry_base_s * 2**exponent))


@dataclass(slots=True)
class SendSummary:
    """What one run of the sender did, by scan id."""

    marked: int = 0
    sent: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-able summary (the task's return value)."""
        return {
            "marked": self.marked,
            "sent": self.sent,
            "retrying": self.retrying,
            "failed": self.failed,
        }


def report_path(report_dir: Path, job: ReportJob) -> Path:
    """`REPORT_DIR/YYYY/MM/DD/<scan sha256>.sr.dcm`: beside the archive's `<sha256>.dcm`."""
    day = job.received_at
    return report_dir / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"{job.sha256}.sr.dcm"


def heatmap_instance_path(report_dir: Path, job: ReportJob) -> Path:
    """`REPORT_DIR/YYYY/MM/DD/<scan sha256>.heatmap.dcm`: the heatmap's Secondary Capture."""
    return report_path(report_dir, job).with_name(f"{job.sha256}.heatmap.dcm")


def _read(path: Path, what: str, job: ReportJob, *, header_only: bool) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=header_only)
    except FileNotFoundError:
        # Maybe a shared volume that is not mounted right now: retried, not given up.
        raise DeliveryError(
            f"scan {job.scan_id}: {what} {path} is missing",
            "check that the archive volume is mounted on this worker",
        ) from None
    except (InvalidDicomError, ValueError, EOFError) as exc:
        raise ReportBuildError(
            f"scan {job.scan_id}: {what} {path} is not readable DICOM ({type(exc).__name__})",
            "inspect it with `cxr-screen inspect`",
        ) from None


@dataclass(frozen=True, slots=True)
class Prepared:
    """The instances that carry one scan's result, each kept on disk before it is sent."""

    report: Dataset
    report_path: Path
    heatmap: Dataset | None = None
    heatmap_path: Path | None = None

    @property
    def instances(self) -> list[Dataset]:
        """What is sent, the report first."""
        return [self.report] if self.heatmap is None else [self.report, self.heatmap]


def prepare_report(job: ReportJob, config: ReportConfig) -> Prepared:
    """The scan's report (and heatmap image) from an earlier try, or built now.

    Raises:
        ReportBuildError: No report can ever be built for this scan (give up).
        DeliveryError: A file is not reachable now (retry).
        OSError: The report could not be written (retry).
    """
    kept_heatmap = heatmap_instance_path(config.report_dir, job)
    heatmap_kept = job.heatmap_path is None or kept_heatmap.is_file()
    if job.report_path and Path(job.report_path).is_file() and heatmap_kept:
        # A retry sends the very files of the first try (same UIDs, same bytes).
        kept = Path(job.report_path)
        report = _read(kept, "the kept report", job, header_only=False)
        if job.heatmap_path is None:
            return Prepared(report, kept)
        heatmap = _read(kept_heatmap, "the kept heatmap image", job, header_only=False)
        return Prepared(report, kept, heatmap, kept_heatmap)
    facts = _facts(job)
    if not job.stored_path:
        raise ReportBuildError(
            f"scan {job.scan_id} has no stored file to report on",
            "its file was never archived; drop it in the inbox again",
        )
    header = _read(Path(job.stored_path), "the archived image", job, header_only=True)
    device = device_observer_uid(config.calling_ae_title)
    report = build_report(header, facts, device_uid=device)
    target = report_path(config.report_dir, job)
    write_atomically(target, _encoded(report))
    if job.heatmap_path is None:
        return Prepared(report, target)
    picture = _picture(Path(job.heatmap_path), job)
    heatmap = build_heatmap_sc(header, picture, facts, device_uid=device)
    write_atomically(kept_heatmap, _encoded(heatmap))
    return Prepared(report, target, heatmap, kept_heatmap)


def _facts(job: ReportJob) -> ResultFacts:
    if (
        job.label is None
        or job.probability is None
        or job.threshold is None
        or job.model_version is None
        or job.positive_class is None
    ):
        raise ReportBuildError(
            f"scan {job.scan_id} has no prediction to report", "screen the scan first"
        )
    return ResultFacts(
        label=job.label,
        positive_class=job.positive_class,
        probability=job.probability,
        threshold=job.threshold,
        model_version=job.model_version,
        scan_sha256=job.sha256,
    )


def _encoded(instance: Dataset) -> bytes:
    buffer = BytesIO()
    instance.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _picture(path: Path, job: ReportJob) -> npt.NDArray[np.uint8]:
    """The heatmap picture (RGB) the Secondary Capture carries."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DeliveryError(
            f"scan {job.scan_id}: the heatmap {path} is missing",
            "check that the archive volume is mounted on this worker",
        ) from None
    except (OSError, ValueError) as exc:
        raise ReportBuildError(
            f"scan {job.scan_id}: the heatmap {path} is not a readable PNG ({type(exc).__name__})",
            "screen the scan again to make a new heatmap",
        ) from None


def _record(
    factory: sessionmaker[Session],
    config: ReportConfig,
    job: ReportJob,
    outcome: StoreOutcome,
    summary: SendSummary,
    now: datetime,
) -> None:
    with session_scope(factory) as session:
        if outcome.stored:
            record_report_sent(session, scan_id=job.scan_id, sent_at=utcnow())
            summary.sent.append(job.scan_id)
            log.info("scan %d: report sent to %s", job.scan_id, config.destination)
            return
        give_up = job.attempts >= config.max_attempts
        retry_at = None if give_up else now + config.retry_delay(job.attempts)
        record_report_failure(session, scan_id=job.scan_id, error=outcome.detail, retry_at=retry_at)
    if give_up:
        summary.failed.append(job.scan_id)
        log.error(
            "scan %d: report not delivered after %d attempts, giving up: %s",
            job.scan_id,
            job.attempts,
            outcome.detail,
        )
    else:
        summary.retrying.append(job.scan_id)
        log.warning(
            "scan %d: report not delivered (attempt %d, next at %s): %s",
            job.scan_id,
            job.attempts,
            retry_at.isoformat() if retry_at else "never",
            outcome.detail,
        )


def send_due_reports(
    factory: sessionmaker[Session], config: ReportConfig, *, now: datetime | None = None
) -> SendSummary:
    """One pass of the sender: give new DICOM results a report status, send what is due.

    Screening never waits on this: it runs as its own periodic task, a failed send only
    moves that report's next attempt back (exponential backoff), and one association
    carries the whole batch, so a PACS that is down costs one connection timeout.
    """
    now = now or utcnow()
    summary = SendSummary()
    with session_scope(factory) as session:
        summary.marked = mark_new_reports(session, enabled=config.enabled)
    if not config.enabled or config.destination is None:
        return summary
    with session_scope(factory) as session:
        jobs = claim_due_reports(session, now=now, lease=config.lease, limit=config.batch_limit)
    with quiet_pydicom():
        _send(factory, config, config.destination, jobs, summary, now)
    return summary


def _send(
    factory: sessionmaker[Session],
    config: ReportConfig,
    destination: Destination,
    jobs: list[ReportJob],
    summary: SendSummary,
    now: datetime,
) -> None:
    ready: list[tuple[ReportJob, Prepared]] = []
    for job in jobs:
        try:
            prepared = prepare_report(job, config)
        except ReportBuildError as exc:
            _give_up(factory, job, exc, summary)
            continue
        except (DeliveryError, OSError) as exc:
            _record(factory, config, job, StoreOutcome(False, str(exc)), summary, now)
            continue
        with session_scope(factory) as session:
            record_report_built(
                session,
                scan_id=job.scan_id,
                path=str(prepared.report_path),
                sop_instance_uid=str(prepared.report.SOPInstanceUID),
            )
            if prepared.heatmap is not None:
                record_heatmap_built(
                    session,
                    scan_id=job.scan_id,
                    sop_instance_uid=str(prepared.heatmap.SOPInstanceUID),
                )
        ready.append((job, prepared))
    if not ready:
        return
    instances = [instance for _, prepared in ready for instance in prepared.instances]
    try:
        outcomes = store_reports(
            instances,
            destination=destination,
            calling_ae_title=config.calling_ae_title,
            timeout=config.timeout,
        )
    except DeliveryError as exc:
        outcomes = [StoreOutcome(False, str(exc))] * len(instances)
    answers = iter(outcomes)
    for job, prepared in ready:
        # Delivered when every instance of the scan was stored; else all are sent again
        # (same UIDs: the PACS keeps one copy of what it already has).
        mine = [next(answers) for _ in prepared.instances]
        refused = [outcome for outcome in mine if not outcome.stored]
        _record(factory, config, job, refused[0] if refused else mine[0], summary, now)


def _give_up(
    factory: sessionmaker[Session], job: ReportJob, error: ReportBuildError, summary: SendSummary
) -> None:
    with session_scope(factory) as session:
        record_report_failure(session, scan_id=job.scan_id, error=str(error), retry_at=None)
    summary.failed.append(job.scan_id)
    log.error("scan %d: no report can be built: %s", job.scan_id, error)
