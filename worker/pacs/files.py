"""Atomic file writes: a reader (the watcher, a person) never sees half a file."""

from __future__ import annotations

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
