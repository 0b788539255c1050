"""Screen one batch of scans: claim, decode in threads, one predict, store, file away."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session, sessionmaker

from db.models import ScanStatus
from db.scans import (
    NewPrediction,
    claim_scans,
    mark_unscreenable,
    release_scans,
    store_predictions,
)
from db.session import session_scope
from worker.errors import ScreeningError, TransientError, UnreadableScan, brief
from worker.filing import archive_path, move_file, quarantine_path, write_reason
from worker.imaging import (
    DecodeOptions,
    ScanMetadata,
    decode_path,
    read_metadata,
    to_model_input,
)
from worker.inference import LoadedModel, ModelCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Filing:
    """Where screened files go; `None` leaves them where they are (one-shot screening)."""

    archive: Path
    quarantine: Path


@dataclass(slots=True)
class ScreeningContext:
    """What a worker process keeps between batches."""

    session_factory: sessionmaker[Session]
    models: ModelCache
    decode_options: DecodeOptions
    executor: ThreadPoolExecutor
    worker_name: str
    filing: Filing | None


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A claimed scan's fields, detached from the session for the decode threads."""

    id: int
    sha256: str
    source_path: str
    stored_path: str | None
    received_at: datetime

    @property
    def suffix(self) -> str:
        return Path(self.source_path).suffix

    def current_file(self, filing: Filing | None) -> Path:
        """Where the file is now: where the row says, or already in the archive."""
        path = Path(self.stored_path or self.source_path)
        if not path.exists() and filing is not None:
            archived = archive_path(
                filing.archive, sha256=self.sha256, received_at=self.received_at, suffix=self.suffix
            )
            if archived.exists():  # moved by an attempt that died before its commit
                return archived
        return path


@dataclass(slots=True)
class BatchReport:
    """What happened to each scan id handed to `screen_batch`."""

    model_version: str | None = None
    done: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # not queued: taken, done, or gone
    waiting: list[int] = field(default_factory=list)  # no active model yet
    predict_seconds: float = 0.0
    decode_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-able summary (the task's return value and log line)."""
        return {
            "model_version": self.model_version,
            "done": self.done,
            "rejected": self.rejected,
            "failed": self.failed,
            "skipped": self.skipped,
            "waiting": self.waiting,
            "predict_seconds": round(self.predict_seconds, 4),
            "decode_seconds": round(self.decode_seconds, 4),
        }


@dataclass(frozen=True, slots=True)
class Prepared:
    """A file decoded into model input, with the header columns for its scan row."""

    image: npt.NDArray[np.uint8]
    header: dict[str, Any]


def _header_columns(metadata: ScanMetadata) -> dict[str, Any]:
    """The scans-table columns the decoder learnt from the file's header."""
    return {
        "format": metadata.format,
        "modality": metadata.modality,
        "body_part": metadata.body_part,
        "view_position": metadata.view_position,
        "sop_instance_uid": metadata.sop_instance_uid,
        "study_instance_uid": metadata.study_instance_uid,
        "series_instance_uid": metadata.series_instance_uid,
        "patient_ref": metadata.patient_ref,
    }


def draft_for(options: DecodeOptions, input_size: int) -> DecodeOptions:
    """Options that draft-decode big JPEGs to twice the model's input size, not less.

    Decoding straight to the input size moves sharp edges by up to half a JPEG block;
    at twice the size the model input is within half a grey level of a full decode
    (bench/results/decode.md) at a fraction of the cost.
    """
    if options.draft_size is None:
        return options
    return replace(options, draft_size=2 * input_size)


def prepare_file(path: Path, size: int, options: DecodeOptions) -> Prepared | ScreeningError:
    """Decode `path` into a (size, size, 3) model input, or the reason it cannot be.

    Bad files come back as the error (not raised) so one file never sinks its batch;
    only transient I/O errors are raised.
    """
    if not path.exists():
        return UnreadableScan(
            path,
            "the file is gone from where it was recorded",
            "it was moved or deleted outside cxr-screen; drop it in the inbox again",
        )
    try:
        radiograph = decode_path(path, options)
        return Prepared(to_model_input(radiograph, size), _header_columns(radiograph.metadata))
    except ScreeningError as exc:
        return exc
    except TransientError:
        raise
    except (ValueError, TypeError, RuntimeError, OSError, MemoryError) as exc:
        # A decoder library failing in a way it does not document: the file is the
        # likeliest cause, so record it against the file rather than crash the batch.
        return UnreadableScan(
            path, f"the decoder failed: {brief(exc)}", "inspect the file with `cxr-screen inspect`"
        )


def screen_batch(ctx: ScreeningContext, scan_ids: list[int]) -> BatchReport:
    """Screen the queued scans among `scan_ids`; every scan ends done, rejected or failed.

    Raises:
        TransientError, sqlalchemy.exc.OperationalError, ModelUnavailableError: retry later;
            the scans stay claimed by this worker and its retry takes them again.
    """
    report = BatchReport()
    model = ctx.models.current()
    if model is None:
        # Nothing is claimed: the scans stay queued and the reconcile task sends them
        # again; they are screened as soon as a model is promoted.
        report.waiting = list(scan_ids)
        return report
    report.model_version = model.version
    with session_scope(ctx.session_factory) as session:
        claimed = [
            _Claimed(s.id, s.sha256, s.source_path, s.stored_path, s.received_at)
            for s in claim_scans(session, scan_ids=scan_ids, worker=ctx.worker_name)
        ]
    claimed_ids = {s.id for s in claimed}
    report.skipped = [i for i in scan_ids if i not in claimed_ids]
    if not claimed:
        return report
    try:
        _screen_claimed(ctx, model, claimed, report)
    except BaseException:
        # Anything unexpected (including a shutdown) hands the batch back at once
        # instead of waiting for the claim timeout. Best effort: the database may be
        # the thing that failed, and then the claim timeout is the safety net.
        try:
            with session_scope(ctx.session_factory) as session:
                release_scans(session, scan_ids=[s.id for s in claimed], worker=ctx.worker_name)
        except Exception:  # noqa: BLE001 - the original error matters more
            log.warning("could not release scans %s; the claim timeout will", sorted(claimed_ids))
        raise
    return report


def _screen_claimed(
    ctx: ScreeningContext, model: LoadedModel, claimed: list[_Claimed], report: BatchReport
) -> None:
    started = time.perf_counter()
    options = draft_for(ctx.decode_options, model.input_size)
    prepared = list(
        ctx.executor.map(
            lambda s: prepare_file(s.current_file(ctx.filing), model.input_size, options), claimed
        )
    )
    report.decode_seconds = time.perf_counter() - started

    good: list[tuple[_Claimed, Prepared]] = []
    for scan, outcome in zip(claimed, prepared, strict=True):
        if isinstance(outcome, ScreeningError):
            _set_aside(ctx, scan, outcome)
            (report.rejected if outcome.status is ScanStatus.REJECTED else report.failed).append(
                scan.id
            )
        else:
            good.append((scan, outcome))
    if not good:
        return

    started = time.perf_counter()
    verdicts = model.classify(np.stack([p.image for _, p in good]))
    report.predict_seconds = time.perf_counter() - started
    per_scan_ms = report.predict_seconds * 1000 / len(good)

    predictions: list[NewPrediction] = []
    updates: dict[int, dict[str, Any]] = {}
    for (scan, ready), verdict in zip(good, verdicts, strict=True):
        predictions.append(
            NewPrediction(
                scan_id=scan.id,
                label=verdict.label,
                probability=verdict.probability,
                probabilities=verdict.probabilities,
                threshold=model.threshold,
                inference_ms=per_scan_ms,
                batch_size=len(good),
                inference_precision=verdict.precision,
            )
        )
        updates[scan.id] = dict(ready.header)
        if ctx.filing is not None:
            source = scan.current_file(ctx.filing)
            target = archive_path(
                ctx.filing.archive,
                sha256=scan.sha256,
                received_at=scan.received_at,
                suffix=scan.suffix,
            )
            updates[scan.id]["stored_path"] = str(_move(source, target))
    with session_scope(ctx.session_factory) as session:
        store_predictions(
            session,
            predictions=predictions,
            model_version_id=model.version_id,
            worker=ctx.worker_name,
            scan_updates=updates,
        )
    report.done = [p.scan_id for p in predictions]


def _move(source: Path, target: Path) -> Path:
    try:
        return move_file(source, target)
    except OSError as exc:
        raise TransientError(
            source,
            f"could not move the file to {target}: {brief(exc)}",
            "check the archive/quarantine folders' space and permissions",
        ) from exc


def _rejected_header(
    path: Path, error: ScreeningError, options: DecodeOptions
) -> dict[str, Any] | None:
    """Header columns of a valid-but-out-of-scope file (a CT, a hip), read before it moves."""
    if error.status is not ScanStatus.REJECTED or error.code == "too_large":
        return None
    try:
        return _header_columns(read_metadata(path, options))
    except (ScreeningError, TransientError) as exc:
        log.debug("no header for %s: %s", path.name, exc)
        return None


def _set_aside(ctx: ScreeningContext, scan: _Claimed, error: ScreeningError) -> None:
    """Quarantine the file with its reason and record the verdict."""
    log.warning("scan %d %s: %s", scan.id, error.status.value, error.message)
    source = scan.current_file(ctx.filing)
    header = _rejected_header(source, error, ctx.decode_options)
    stored: str | None = None
    if ctx.filing is not None and source.exists():
        target = quarantine_path(
            ctx.filing.quarantine,
            sha256=scan.sha256,
            received_at=scan.received_at,
            name=Path(scan.source_path).name,
        )
        moved = _move(source, target)
        write_reason(
            moved,
            status=error.status.value,
            code=error.code,
            message=error.message,
            source_path=scan.source_path,
        )
        stored = str(moved)
    with session_scope(ctx.session_factory) as session:
        mark_unscreenable(
            session,
            scan_id=scan.id,
            status=error.status,
            code=error.code,
            error=error.message,
            stored_path=stored,
            header=header,
        )
