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


def write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` so that no reader ever sees a partial file.

    The bytes go to a hidden `.part` file beside the target (ignored by the watcher),
    are flushed to disk, then renamed over the target in one step; the folder entries
    are flushed too, so a crash leaves the old state or the whole file, never half.
    """
    folder = target.parent
    new_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); the watcher and workers read it as the
        # same user or group, and nobody else needs to.
        Path(temporary).chmod(0o640)
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    if new_folder:
        _fsync_dir(folder.parent)


def publish_new(target: Path, data: bytes) -> Path:
    """Write `data` at `target`, or beside it when that name holds other bytes; never replace.

    A PACS may send a corrected instance under the same SOP Instance UID while the first
    is still waiting in the inbox: both are kept, the second as `<sop>.<sha12>.dcm`
    (visible, so the watcher takes it). Bytes identical to those at `target` are written
    beside too, under the same `<sop>.<sha12>.dcm` name once, so the watcher records the
    re-send as a duplicate of the scan instead of it vanishing unrecorded. The bytes go
    to a hidden fsynced `.part` file, then are hard-linked into place, which fails rather
    than replace a file that appeared meanwhile.
    """
    digest = hashlib.sha256(data).hexdigest()
    folder = target.parent
    new_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).chmod(0o640)
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
            _fsync_dir(folder)
            if new_folder:
                _fsync_dir(folder.parent)
            return candidate
        raise FileExistsError(f"no free name beside {target}")
    finally:
        Path(temporary).unlink(missing_ok=True)


def _same_bytes(path: Path, digest: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == digest
    except OSError:
        return False
