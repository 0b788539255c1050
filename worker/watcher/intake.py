"""Take one complete file: hash it, then record it, or file it away as a duplicate or reject."""

from __future__ import annotations

import enum
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.intake import (
    delete_duplicate,
    duplicates_of,
    record_duplicate,
    record_rejected_file,
    relocate_queued_scan,
    set_stored_path,
)
from db.models import ScanStatus
from db.scans import find_scan_by_hash, record_scan
from db.session import session_scope
from db.types import utcnow
from worker.confined import (
    ContentMismatch,
    FileIdentity,
    LeavesFolder,
    NotRegularFile,
    Placement,
    file_away,
    fit_name,
    open_file,
)
from worker.confined import hash_file as confined_hash
from worker.filing import quarantine_path, write_reason
from worker.watcher.names import escaped
from worker.watcher.stability import Signature

log = logging.getLogger(__name__)

TOO_LARGE = "too_large"
DUPLICATES_FOLDER = "duplicates"


class Outcome(enum.StrEnum):
    """What the watcher did with one file."""

    ACCEPTED = "accepted"  # new content: a queued scan, to be sent for screening
    DUPLICATE = "duplicate"  # content already recorded: moved aside, not screened again
    REJECTED = "rejected"  # refused at the door (over the size cap): quarantined
    RECORDED_BEFORE = "recorded_before"  # this very file is already a scan (a restart)
    RELOCATED = "relocated"  # a queued scan's file moved inside the inbox: row updated
    EMPTY = "empty"  # nothing to hash yet; taken when it gets content
    CHANGED = "changed"  # written to while being hashed: wait until it settles


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """One file's outcome, and the version of the file it applies to."""

    outcome: Outcome
    signature: Signature
    scan_id: int | None = None


@dataclass(frozen=True, slots=True)
class Folders:
    """Where files come from and go; all absolute."""

    inbox: Path
    archive: Path
    quarantine: Path

    def name(self, path: Path) -> str:
        """`path` as people know it: relative to the inbox."""
        try:
            return str(path.relative_to(self.inbox))
        except ValueError:
            return str(path)


class NotAFile(Exception):  # noqa: N818 (names the situation, like FileNotFoundError)
    """The path is no longer a regular file (replaced by a link, folder or fifo)."""


@dataclass(frozen=True, slots=True)
class _Digest:
    sha256: str
    size: int
    signature: Signature
    changed: bool
    identity: FileIdentity


@dataclass(frozen=True, slots=True)
class _Known:
    """The fields of an already-recorded scan that decide what a new arrival is."""

    id: int
    status: ScanStatus
    error_code: str | None
    location: Path


def human_size(size: int) -> str:
    """`532 B`, `12.3 KB`, `4.0 MB`: for log lines and reasons."""
    if size < 1024:
        return f"{size} B"
    if size < 1024**2:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024**2:.1f} MB"


def hash_file(path: Path, root: Path) -> _Digest:
    """SHA-256 of the file, streamed in fixed-size reads (constant memory at any size).

    Opened from `root` one folder at a time with O_NOFOLLOW (`worker.confined`), so a
    symlink swapped in after the caller's check, for the file or a folder on the way,
    is refused rather than followed, and with O_NONBLOCK, so a fifo cannot hang the
    watcher.
    """
    try:
        with open_file(root, path) as (descriptor, before):
            with os.fdopen(os.dup(descriptor), "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256")
            after = os.fstat(descriptor)
    except NotRegularFile as exc:
        raise NotAFile(f"{path} {exc.strerror}") from exc
    except LeavesFolder as exc:
        raise NotAFile(f"{path}: {exc.strerror} (a symlink on the way)") from exc
    try:
        now = path.lstat()
    except FileNotFoundError:
        now = None
    signature = Signature.of(before)
    changed = Signature.of(after) != signature or now is None or Signature.of(now) != signature
    return _Digest(digest.hexdigest(), before.st_size, signature, changed, FileIdentity.of(before))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


class Intake:
    """Decides and records what one complete file is; a session per file.

    The database is the source of truth: a scan row is committed before anything is
    sent or moved, and every step after a commit can be repeated after a crash (the
    file is still in the inbox, so the next start finds it and finishes the job).
    """

    def __init__(
        self,
        *,
        folders: Folders,
        session_factory: sessionmaker[Session],
        max_file_bytes: int,
    ) -> None:
        self.folders = folders
        self.session_factory = session_factory
        self.max_file_bytes = max_file_bytes

    def take(self, path: Path) -> IntakeResult:
        """Hash `path` and record it; raises on I/O or database errors (the caller retries)."""
        digest = hash_file(path, self.folders.inbox)
        if digest.changed:
            return IntakeResult(Outcome.CHANGED, digest.signature)
        if digest.size == 0:
            log.info("ignoring %s: empty (taken once it has content)", self.folders.name(path))
            return IntakeResult(Outcome.EMPTY, digest.signature)
        too_large = digest.size > self.max_file_bytes
        source = str(path)
        accepted: int | None = None
        with session_scope(self.session_factory) as session:
            known = find_scan_by_hash(session, sha256=digest.sha256)
            if known is None:
                if too_large:
                    scan, new = record_rejected_file(
                        session,
                        sha256=digest.sha256,
                        source_path=source,
                        size_bytes=digest.size,
                        code=TOO_LARGE,
                        error=self._too_large_message(path, digest.size),
                    )
                else:
                    scan, new = record_scan(
                        session, sha256=digest.sha256, source_path=source, size_bytes=digest.size
                    )
                if new and not too_large:
                    accepted = scan.id
                known = scan  # a rejection to file away, or another watcher won a race
            found = _Known(
                id=known.id,
                status=known.status,
                error_code=known.error_code,
                location=Path(known.stored_path or known.source_path),
            )
        if accepted is not None:  # logged once committed: the log never claims a lost row
            log.info(
                "accepted %s: scan %d (%s, sha256 %s)",
                self.folders.name(path),
                accepted,
                human_size(digest.size),
                digest.sha256[:12],
            )
            return IntakeResult(Outcome.ACCEPTED, digest.signature, accepted)
        return self._known_content(path, digest, found)

    def rename_to_text(self, path: Path) -> Path:
        """Give a file whose name is not UTF-8 an escaped name beside it (`%FF`), once.

        The rename never replaces another file (`worker.confined.file_away` links under
        a free name). Returns the new path, which is then taken like any other file.
        """
        relative = path.relative_to(self.folders.inbox)
        target = self.folders.inbox / Path(*(fit_name(p) for p in escaped(relative).parts))
        sha256, identity = confined_hash(self.folders.inbox, path)
        moved = file_away(
            Placement(self.folders.inbox, path),
            Placement(self.folders.inbox, target),
            sha256=sha256,
            identity=identity,
        )
        log.warning(
            "renamed %s to %s: its name is not valid UTF-8, which the results table, logs "
            "and reports need; senders should use UTF-8 names",
            escaped(relative),
            self.folders.name(moved),
        )
        return moved

    def _known_content(self, path: Path, digest: _Digest, known: _Known) -> IntakeResult:
        name = self.folders.name(path)
        if _same_file(known.location, path):
            if known.status is ScanStatus.REJECTED and known.error_code == TOO_LARGE:
                # Recorded, but not yet moved (new, or a crash came between the two).
                return self._quarantine_too_large(path, digest, known.id)
            log.debug("%s is already scan %d (%s)", name, known.id, known.status.value)
            return IntakeResult(Outcome.RECORDED_BEFORE, digest.signature, known.id)
        if known.status is ScanStatus.QUEUED and not known.location.exists():
            # Someone moved or renamed the file inside the inbox before it was screened:
            # it is the same scan, not a second copy.
            with session_scope(self.session_factory) as session:
                moved = relocate_queued_scan(
                    session, scan_id=known.id, old_path=str(known.location), new_path=str(path)
                )
            if moved:
                log.info("%s is scan %d, moved here inside the inbox", name, known.id)
                return IntakeResult(Outcome.RELOCATED, digest.signature, known.id)
        return self._set_aside_duplicate(path, digest, known)

    def _set_aside_duplicate(self, path: Path, digest: _Digest, known: _Known) -> IntakeResult:
        source = str(path)
        with session_scope(self.session_factory) as session:
            unfinished = [
                d
                for d in duplicates_of(session, scan_id=known.id, source_path=source)
                if d.stored_path is not None and not Path(d.stored_path).exists()
            ]
            if unfinished:
                # Recorded before a crash, never moved: finish that arrival, do not
                # count it twice.
                duplicate = unfinished[-1]
            else:
                duplicate = record_duplicate(
                    session,
                    scan_id=known.id,
                    source_path=source,
                    stored_path=str(self._duplicate_path(digest.sha256, path.name)),
                    size_bytes=digest.size,
                )
            duplicate_id, target = duplicate.id, Path(str(duplicate.stored_path))
        try:
            target = file_away(
                Placement(self.folders.inbox, path),
                Placement(self.folders.archive, target),
                sha256=digest.sha256,
                identity=digest.identity,
            )
        except (FileNotFoundError, ContentMismatch):
            # Gone or rewritten between the hash and the move: the worker archived it
            # (it was the scan's own file after all), someone removed it, or it is new
            # content now (taken again once it settles). Not a duplicate.
            with session_scope(self.session_factory) as session:
                delete_duplicate(session, duplicate_id=duplicate_id)
            raise
        log.info(
            "duplicate %s: same content as scan %d (%s), not screened again; kept as %s",
            self.folders.name(path),
            known.id,
            known.status.value,
            target,
        )
        return IntakeResult(Outcome.DUPLICATE, digest.signature, known.id)

    def _quarantine_too_large(self, path: Path, digest: _Digest, scan_id: int) -> IntakeResult:
        message = self._too_large_message(path, digest.size)
        target = quarantine_path(
            self.folders.quarantine, sha256=digest.sha256, received_at=utcnow(), name=path.name
        )
        moved = file_away(
            Placement(self.folders.inbox, path),
            Placement(self.folders.quarantine, target),
            sha256=digest.sha256,
            identity=digest.identity,
        )
        write_reason(
            moved,
            root=self.folders.quarantine,
            status=ScanStatus.REJECTED.value,
            code=TOO_LARGE,
            message=message,
            source_path=str(path),
        )
        with session_scope(self.session_factory) as session:
            set_stored_path(session, scan_id=scan_id, stored_path=str(moved))
        log.warning("rejected scan %d: %s; moved to %s", scan_id, message, moved)
        return IntakeResult(Outcome.REJECTED, digest.signature, scan_id)

    def _too_large_message(self, path: Path, size: int) -> str:
        return (
            f"{self.folders.name(path)} is {human_size(size)}, over the cap of "
            f"{human_size(self.max_file_bytes)}, so it was not decoded; raise "
            "CXR_MAX_FILE_MB if such files are legitimate"
        )

    def _duplicate_path(self, sha256: str, name: str) -> Path:
        """`archive/duplicates/YYYY/MM/DD/<sha12>_<name>`, numbered when taken already."""
        folder = self.folders.archive / DUPLICATES_FOLDER / utcnow().strftime("%Y/%m/%d")
        candidate = folder / fit_name(f"{sha256[:12]}_{name}")
        number = 2
        while candidate.exists():
            candidate = folder / fit_name(f"{sha256[:12]}_{number}_{name}")
            number += 1
        return candidate
