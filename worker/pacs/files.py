"""Atomic file writes: a reader (the watcher, a person) never sees half a file."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".part"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hidden_copy(target: Path, data: bytes) -> Path:
    """`data` in a hidden, fsynced `.part` file beside `target` (the watcher ignores it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); the watcher and workers read it as the
        # same user or group, and nobody else needs to.
        temporary.chmod(0o640)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _fsync_entries(folder: Path, *, new_folder: bool) -> None:
    """Flush the folder's entries (and its parent's when the folder is new) to disk."""
    _fsync_dir(folder)
    if new_folder:
        _fsync_dir(folder.parent)


def write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` so that no reader ever sees a partial file.

    The bytes go to a hidden `.part` file beside the target (ignored by the watcher),
    are flushed to disk, then renamed over the target in one step; the folder entries
    are flushed too, so a crash leaves the old state or the whole file, never half.
    It replaces `target`: only for files the service derives itself (reports), never
    for received scans, which go through `publish_new`.
    """
    new_folder = not target.parent.exists()
    temporary = _hidden_copy(target, data)
    try:
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_entries(target.parent, new_folder=new_folder)


def publish_new(target: Path, data: bytes) -> Path:
    """Write `data` at `target`, or beside it when that name is taken; never replace a file.

    A PACS may send a corrected instance under the same SOP Instance UID while the first
    is still waiting in the inbox: both are kept, the second as `<sop>.<sha12>.dcm`
    (then `<sop>.<sha12>.2.dcm`... if that name holds other bytes). These names stay
    visible to the watcher (no leading dot, no temporary suffix) and fit in 255 bytes
    (a UID has at most 64 characters).

    A re-send of bytes identical to those at `target` is written beside as well, rather
    than dropped: the watcher then records it as a duplicate of the scan (and files it
    with the duplicates), so every re-send a PACS made leaves a trace. While a copy of
    the same bytes is still waiting beside, a further identical re-send writes nothing
    and returns that copy (the caller logs it): a sender retrying in a loop cannot fill
    the inbox with one instance.

    The bytes go to a hidden, fsynced `.part` file, then are hard-linked to the name:
    `os.link` fails rather than replace a file that appeared meanwhile. The folder is
    fsynced afterwards, so a published file survives a crash.

    Returns:
        The path the bytes are at.

    Raises:
        OSError: the inbox cannot be written, or 99 names beside `target` are taken.
    """
    digest = hashlib.sha256(data).hexdigest()
    new_folder = not target.parent.exists()
    temporary = _hidden_copy(target, data)
    try:
        candidates = [target, target.with_name(f"{target.stem}.{digest[:12]}{target.suffix}")]
        candidates += [
            target.with_name(f"{target.stem}.{digest[:12]}.{n}{target.suffix}")
            for n in range(2, 100)
        ]
        for candidate in candidates:
            try:
                os.link(temporary, candidate)
            except FileExistsError:
                if candidate != target and _same_bytes(candidate, digest):
                    return candidate  # this very re-send was stored already
                continue
            _fsync_entries(target.parent, new_folder=new_folder)
            return candidate
        raise FileExistsError(f"no free name beside {target}")
    finally:
        temporary.unlink(missing_ok=True)


def _same_bytes(path: Path, digest: str) -> bool:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() == digest
    except OSError:
        return False  # unreadable or gone: not a copy to rely on, take the next name
