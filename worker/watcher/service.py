"""Assemble a watcher from settings: folders, database sessions and the broker."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.scans import mark_sent
from db.session import session_scope
from worker.dispatch import send_batches
from worker.settings import Settings
from worker.watcher.batcher import Batcher, SendBatch
from worker.watcher.intake import Folders, Intake
from worker.watcher.observer import Watcher, WatchOptions

log = logging.getLogger(__name__)


class FolderSetupError(ValueError):
    """The configured folders cannot work together; the message says which and why."""


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def _absolute(path: Path) -> Path:
    # abspath, not resolve: keep a symlinked inbox (a mounted share) as configured, so
    # recorded paths read the same on every host that mounts it.
    return Path(os.path.abspath(path))  # noqa: PTH100


def folders_from(settings: Settings) -> Folders:
    """Absolute folders (symlinks kept as configured); creates the inbox if missing.

    Raises:
        FolderSetupError: the archive or quarantine lies inside the inbox (its files
            would be taken again), or the inbox is not a folder.
    """
    folders = Folders(
        inbox=_absolute(settings.storage.inbox),
        archive=_absolute(settings.storage.archive),
        quarantine=_absolute(settings.storage.quarantine),
    )
    for variable, folder in (
        ("CXR_ARCHIVE", folders.archive),
        ("CXR_QUARANTINE", folders.quarantine),
    ):
        if _inside(folder, folders.inbox):
            raise FolderSetupError(
                f"{variable}={folder} is inside CXR_INBOX={folders.inbox}: filed scans would be "
                "taken again; put it beside the inbox"
            )
    try:
        folders.inbox.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise FolderSetupError(f"CXR_INBOX={folders.inbox} is not a folder") from exc
    return folders


def broker_sender(app: Celery, session_factory: sessionmaker[Session]) -> SendBatch:
    """Send one batch and stamp the sent scans `queued_at`; never raises."""

    def send(scan_ids: Sequence[int]) -> Sequence[int]:
        try:
            sent = send_batches(app, scan_ids, batch_size=max(1, len(scan_ids)))
        except Exception as exc:  # noqa: BLE001 - the rows are safe; the watcher must go on
            log.error("sending %d scans failed: %s: %s", len(scan_ids), type(exc).__name__, exc)
            return []
        if sent:
            try:
                with session_scope(session_factory) as session:
                    mark_sent(session, scan_ids=sent)
            except SQLAlchemyError as exc:
                # Sent but not stamped: the reconcile task sends them once more, and
                # screening is idempotent, so this costs a little work, nothing else.
                log.warning("sent %d scans but could not stamp them: %s", len(sent), exc)
            log.info("sent %d scans to the screening queue", len(sent))
        return sent

    return send


def build_watcher(
    settings: Settings,
    *,
    session_factory: sessionmaker[Session],
    app: Celery,
    rescan_interval_s: float = 60.0,
) -> Watcher:
    """A watcher for these settings, sending through `app`."""
    folders = folders_from(settings)
    return Watcher(
        folders=folders,
        intake=Intake(
            folders=folders,
            session_factory=session_factory,
            max_file_bytes=int(settings.decoder.max_file_mb * 1024**2),
        ),
        batcher=Batcher(
            broker_sender(app, session_factory),
            batch_size=settings.screening.batch_size,
            wait_seconds=settings.watcher.batch_wait_ms / 1000,
        ),
        options=WatchOptions(
            stable_seconds=settings.watcher.stable_seconds,
            polling=settings.watcher.watch_polling,
            rescan_interval_s=rescan_interval_s,
        ),
    )
