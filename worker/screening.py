"""Screen one batch of scans: claim, decode in threads, one predict, store, file away."""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.models import HeatmapStatus, ScanStatus
from db.scans import (
    NewPrediction,
    claim_scans,
    mark_unscreenable,
    release_scans,
    store_predictions,
)
from db.session import session_scope
from worker.confined import (
    ContentMismatch,
    FileIdentity,
    HeldFile,
    LeavesFolder,
    NotRegularFile,
    Placement,
    file_away,
    read_held,
)
from worker.errors import ContentChanged, FilingFailed, OutsideFolders, scan_status
from worker.filing import Filing, archive_path, quarantine_path, write_reason
from worker.heatmaps import HeatmapJob, Heatmaps, wanted
from worker.imaging import DecodeOptions, read_metadata_bytes
from worker.imaging.errors import ScreeningError, TransientError
from worker.inference import LoadedModel, ModelCache
from worker.pipeline import (
    ModelInput,
    Prepared,
    header_columns,
    interpret,
    predict_prepared,
    prepare_bytes,
)
from worker.pipeline.prepare import file_gone, over_cap, unreadable_now

log = logging.getLogger(__name__)

# Outages of the database or storage leave the batch claimed by this worker for its
# retry: nothing is the scans' fault, and re-claiming them counts no attempt. A model
# outage (NaN answers, a broken artifact) hands the batch back, for another worker.
RETRIED_IN_PLACE = (OperationalError, InterfaceError, TransientError)


@dataclass(slots=True)
class ScreeningContext:
    """What a worker process keeps between batches."""

    session_factory: sessionmaker[Session]
    models: ModelCache
    decode_options: DecodeOptions
    executor: ThreadPoolExecutor
    worker_name: str
    filing: Filing | None
    # Which verdicts get a heatmap; the service sets it from CXR_HEATMAPS.
    heatmaps: Heatmaps = field(default_factory=lambda: Heatmaps("off"))


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

    @property
    def name(self) -> str:
        return Path(self.source_path).name

    def candidates(self, filing: Filing | None) -> list[Path]:
        """Where the file may be, likeliest first: where the row says, where it arrived,
        and where an attempt that died before its commit put it (archive, quarantine)."""
        paths = [Path(self.stored_path or self.source_path), Path(self.source_path)]
        if filing is not None:
            paths.append(self.archive_target(filing))
            paths.append(self.quarantine_target(filing))
        return list(dict.fromkeys(paths))

    def archive_target(self, filing: Filing) -> Path:
        return archive_path(
            filing.archive, sha256=self.sha256, received_at=self.received_at, suffix=self.suffix
        )

    def quarantine_target(self, filing: Filing) -> Path:
        return quarantine_path(
            filing.quarantine, sha256=self.sha256, received_at=self.received_at, name=self.name
        )


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
    heatmaps: list[int] = field(default_factory=list)  # made after the verdicts were stored
    heatmap_seconds: float = 0.0

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
            "heatmaps": self.heatmaps,
            "heatmap_seconds": round(self.heatmap_seconds, 4),
        }


@dataclass(frozen=True, slots=True)
class _Located:
    """A scan's file as it was read: where it lies, and its bytes (None: over the cap)."""

    path: Path
    placement: Placement | None  # None: not the service's to move (one-shot screening)
    identity: FileIdentity
    held: HeldFile | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What preparing one claimed scan gave: model input, or the reason there is none."""

    scan: _Claimed
    located: _Located | None
    result: Prepared | ScreeningError


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
    except RETRIED_IN_PLACE:
        # An outage (database, storage, model store): the scans stay claimed by this
        # worker, whose retry takes them again without counting an attempt.
        raise
    except BaseException:
        # Anything else (including a shutdown) hands the batch back at once instead of
        # waiting for the claim timeout. Best effort: the database may be the thing that
        # failed, and then the claim timeout is the safety net.
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
    model_input = model.model_input(ctx.decode_options)
    outcomes = list(ctx.executor.map(lambda s: _prepare_scan(ctx, s, model_input), claimed))
    report.decode_seconds = time.perf_counter() - started

    good: list[_Outcome] = []
    for outcome in outcomes:
        if isinstance(outcome.result, ScreeningError):
            _set_aside(ctx, outcome, outcome.result, report)
        else:
            good.append(outcome)
    if not good:
        return

    started = time.perf_counter()
    prepared = [o.result for o in good if isinstance(o.result, Prepared)]
    verdicts = interpret(predict_prepared(model.predictor, prepared), model.point, model.predictor)
    report.predict_seconds = time.perf_counter() - started
    per_scan_ms = report.predict_seconds * 1000 / len(good)

    predictions: list[NewPrediction] = []
    updates: dict[int, dict[str, Any]] = {}
    explain: list[HeatmapJob] = []
    for outcome, verdict in zip(good, verdicts, strict=True):
        scan = outcome.scan
        assert isinstance(outcome.result, Prepared)
        header = dict(outcome.result.header)
        if ctx.filing is not None and outcome.located is not None:
            filed = _file_away(
                outcome.located,
                Placement(ctx.filing.archive, scan.archive_target(ctx.filing)),
                scan,
            )
            if isinstance(filed, ScreeningError):
                _set_aside(ctx, dataclasses.replace(outcome, located=None), filed, report)
                continue
            header["stored_path"] = str(filed)
            if wanted(ctx.heatmaps.mode, verdict, model.point.positive_class):
                # Asked for in the verdict's own commit: if this worker dies before the
                # heatmap is made, the reconcile task sees it owed and asks again.
                header["heatmap_status"] = HeatmapStatus.PENDING
                explain.append(
                    HeatmapJob(
                        scan.id,
                        scan.sha256,
                        scan.received_at,
                        outcome.result.image,
                        verdict.label,
                        verdict.probability,
                        model.threshold,
                    )
                )
        updates[scan.id] = header
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
    if not predictions:
        return
    with session_scope(ctx.session_factory) as session:
        store_predictions(
            session,
            predictions=predictions,
            model_version_id=model.version_id,
            worker=ctx.worker_name,
            scan_updates=updates,
        )
    report.done = [p.scan_id for p in predictions]
    if explain and ctx.filing is not None:
        _explain(ctx, model, explain, report)


def _explain(
    ctx: ScreeningContext, model: LoadedModel, jobs: list[HeatmapJob], report: BatchReport
) -> None:
    """Heatmaps of the stored verdicts; nothing here can undo or delay a result."""
    assert ctx.filing is not None
    started = time.perf_counter()
    try:
        made, _ = ctx.heatmaps.make(ctx.session_factory, ctx.filing, model, jobs)
    except Exception as exc:  # noqa: BLE001 - the verdicts are committed; they stand
        # Most likely the database went away after the verdicts' commit: the heatmaps
        # stay pending, and the reconcile task asks for them again.
        log.warning(
            "heatmaps of scans %s not recorded (%s); they are asked for again later",
            [job.scan_id for job in jobs],
            type(exc).__name__,
        )
        made = {}
    report.heatmaps = sorted(made)
    report.heatmap_seconds = time.perf_counter() - started


def _prepare_scan(ctx: ScreeningContext, scan: _Claimed, model_input: ModelInput) -> _Outcome:
    """Read the scan's file once, check its bytes are the scan's, and decode them."""
    try:
        located = _locate(ctx.filing, scan, model_input.options.max_file_bytes)
    except ScreeningError as exc:
        return _Outcome(scan, None, exc)
    if located.held is None:
        size = located.identity.size
        return _Outcome(scan, located, over_cap(located.path, size, model_input.options))
    if located.held.sha256 != scan.sha256:
        # Overwritten or swapped after intake: a verdict on these bytes would be
        # recorded against a hash they do not have. Nothing is moved: new content in
        # the inbox is the watcher's to take as a new scan.
        return _Outcome(
            scan,
            None,
            ContentChanged(
                located.path,
                f"holds other bytes than the ones recorded at intake (sha256 "
                f"{scan.sha256[:12]}..., now {located.held.sha256[:12]}...): it was "
                "overwritten or replaced after it arrived, so no result was made for it",
                "senders must never rewrite a file in the inbox; new content there is "
                "taken as a new scan",
            ),
        )
    return _Outcome(scan, located, prepare_bytes(located.held, model_input))


def _locate(filing: Filing | None, scan: _Claimed, max_bytes: int) -> _Located:
    """Find and read the scan's file wherever an earlier attempt may have left it.

    Only inside the service's folders, through no symlink (`worker.confined`).

    Raises:
        ScreeningError: gone, outside the folders, or not a regular file.
        TransientError: an I/O error worth retrying.
    """
    first = Path(scan.stored_path or scan.source_path)
    for path in scan.candidates(filing):
        placement = Placement(path.parent, path) if filing is None else filing.placement(path)
        if placement is None:
            _raise_outside(path)
        try:
            held = read_held(placement.root, path, max_bytes=max_bytes)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (LeavesFolder, NotRegularFile) as exc:
            raise OutsideFolders(
                path,
                f"cannot be read safely: {exc.strerror} (a folder or the file was replaced "
                "by a symlink or other non-file after intake), so nothing was read or moved",
                "put the real file back in the inbox; symlinks are never followed",
            ) from None
        except ContentMismatch as exc:
            raise unreadable_now(path, exc) from exc
        except OSError as exc:
            raise unreadable_now(path, exc) from exc
        if isinstance(held, FileIdentity):
            return _Located(path, placement if filing else None, held, None)
        return _Located(path, placement if filing else None, held.identity, held)
    raise file_gone(first)


def _raise_outside(path: Path) -> NoReturn:
    raise OutsideFolders(
        path,
        "is recorded at a path outside the inbox, archive and quarantine (the folders "
        "were reconfigured?), so the worker does not touch it",
        "point CXR_INBOX/CXR_ARCHIVE/CXR_QUARANTINE at the folders the scan was received in",
    )


# What an outage of storage looks like (full, read-only, gone away): every file of the
# batch would meet it, so the batch is retried. Any other OSError while filing one file
# (a name the file system refuses, a folder in the way) is that file's problem alone.
STORAGE_OUTAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EROFS,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ENOMEM,
    }
)


def _file_away(located: _Located, target: Placement, scan: _Claimed) -> Path | ScreeningError:
    """Move the scan's file to `target` (see `worker.confined.file_away`).

    Returns:
        Where it is kept now, or the per-file reason it could not be filed.

    Raises:
        TransientError: storage is out (full, read-only, unreachable): retry the batch.
    """
    assert located.placement is not None
    try:
        return file_away(
            located.placement,
            target,
            sha256=scan.sha256,
            identity=located.identity,
            data=located.held.data if located.held is not None else None,
        )
    except (LeavesFolder, NotRegularFile) as exc:
        return OutsideFolders(
            located.path,
            f"could not be filed safely: {exc.strerror}; nothing was moved",
            "check that no folder inside the inbox, archive or quarantine is a symlink",
        )
    except ContentMismatch:
        return ContentChanged(
            located.path,
            "was rewritten while it was being filed, so it was left where it is",
            "senders must never rewrite a file in the inbox; new content there is taken "
            "as a new scan",
        )
    except OSError as exc:
        if exc.errno in STORAGE_OUTAGE_ERRNOS:
            raise TransientError(
                located.path,
                f"could not be moved to {target.path}: {exc.strerror or exc}",
                "check the archive/quarantine folders' space, mounts and permissions",
            ) from exc
        return FilingFailed(
            located.path,
            f"could not be moved to {target.path} ({exc.strerror or exc}), so it was "
            "left where it is",
            "rename the file (shorter, plain name) and drop it in the inbox again",
        )


def _rejected_header(
    located: _Located | None, error: ScreeningError, options: DecodeOptions
) -> dict[str, Any] | None:
    """Header columns of a valid-but-out-of-scope file (a CT, a hip), from the read bytes."""
    if scan_status(error) is not ScanStatus.REJECTED or located is None or located.held is None:
        return None
    try:
        return header_columns(read_metadata_bytes(located.held.data, located.path, options))
    except (ScreeningError, TransientError) as exc:
        log.debug("no header for %s: %s", located.path.name, exc)
        return None


def _set_aside(
    ctx: ScreeningContext, outcome: _Outcome, error: ScreeningError, report: BatchReport
) -> None:
    """Quarantine the file with its reason (when it is ours to move) and record the verdict."""
    scan, located = outcome.scan, outcome.located
    log.warning("scan %d %s: %s", scan.id, error.status.value, error.message)
    header = _rejected_header(located, error, ctx.decode_options)
    stored: str | None = None
    if ctx.filing is not None and located is not None and located.placement is not None:
        target = Placement(ctx.filing.quarantine, scan.quarantine_target(ctx.filing))
        filed = _file_away(located, target, scan)
        if isinstance(filed, ScreeningError):
            log.warning("scan %d: %s", scan.id, filed.message)
            error = filed
        else:
            write_reason(
                filed,
                root=ctx.filing.quarantine,
                status=error.status.value,
                code=error.code,
                message=error.message,
                source_path=scan.source_path,
            )
            stored = str(filed)
    with session_scope(ctx.session_factory) as session:
        mark_unscreenable(
            session,
            scan_id=scan.id,
            status=scan_status(error),
            code=error.code,
            error=error.message,
            stored_path=stored,
            header=header,
        )
    rejected = scan_status(error) is ScanStatus.REJECTED
    (report.rejected if rejected else report.failed).append(scan.id)
