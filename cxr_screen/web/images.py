"""A scan's pictures for its page: the heatmap PNG and the model input, read confined.

Files are read only below the configured archive (`worker.confined`: no symlink
followed, nothing outside the folder), found through the scan's row, never a path
from the request; the archived file must still hold the scan's bytes (its SHA-256).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from worker.confined import FileIdentity, HeldFile, LeavesFolder, NotRegularFile, inside, read_held
from worker.imaging import DecodeOptions
from worker.imaging.errors import ScreeningError
from worker.pipeline import ModelInput, prepare_bytes
from worker.pipeline.heatmap_picture import png_bytes
from worker.settings import Settings

log = logging.getLogger(__name__)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A heatmap is a few hundred kilobytes; anything far larger is not one of ours.
MAX_HEATMAP_BYTES = 32 * 1024**2


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Where a scan's file is now: which folder, its path, and whether it is there."""

    folder: str
    path: str | None
    present: bool


def absolute(root: Path) -> Path:
    """A configured folder as the watcher and workers record paths below it: absolute
    (the defaults, `archive` and so on, are relative to the working directory), links
    left unresolved as `worker.runtime` leaves them."""
    return Path(os.path.abspath(root))  # noqa: PTH100


def _held(root: Path, path: Path, *, max_bytes: int, scan_id: int) -> HeldFile | None:
    try:
        held = read_held(absolute(root), path, max_bytes=max_bytes)
    except (FileNotFoundError, NotADirectoryError):
        log.warning("scan %d: its file is not where the database says", scan_id)
        return None
    except (LeavesFolder, NotRegularFile) as exc:
        # strerror, not the exception: its text would quote the path.
        log.warning("scan %d: its file is not in its folder (%s)", scan_id, exc.strerror)
        return None
    except OSError as exc:
        log.warning("scan %d: its file cannot be read (%s)", scan_id, exc.strerror)
        return None
    if isinstance(held, FileIdentity):
        log.warning("scan %d: its file is larger than the cap", scan_id)
        return None
    return held


def heatmap_png(settings: Settings, *, scan_id: int, heatmap_path: str | None) -> bytes | None:
    """The heatmap PNG of a scan, if it is a PNG inside the archive."""
    if not heatmap_path:
        return None
    held = _held(
        settings.storage.archive,
        Path(heatmap_path),
        max_bytes=MAX_HEATMAP_BYTES,
        scan_id=scan_id,
    )
    if held is None or not held.data.startswith(PNG_SIGNATURE):
        return None
    return held.data


def model_input_png(
    settings: Settings,
    decode: DecodeOptions,
    *,
    scan_id: int,
    sha256: str,
    stored_path: str | None,
    input_size: int,
) -> bytes | None:
    """The archived file decoded as the model saw it (`prepare_bytes`), as a PNG."""
    if not stored_path:
        return None
    held = _held(
        settings.storage.archive,
        Path(stored_path),
        max_bytes=decode.max_file_bytes,
        scan_id=scan_id,
    )
    if held is None:
        return None
    if held.sha256 != sha256:
        log.warning("scan %d: the archived file no longer holds the scan's bytes", scan_id)
        return None
    prepared = prepare_bytes(held, ModelInput.of(input_size, decode))
    if isinstance(prepared, ScreeningError):
        log.warning("scan %d: its archived file does not decode (%s)", scan_id, prepared.code)
        return None
    return png_bytes(prepared.image)


def whereabouts(settings: Settings, stored_path: str | None, source_path: str) -> Whereabouts:
    """Which configured folder holds the file now, and whether it is there."""
    storage = settings.storage
    path = stored_path or source_path
    for name, root in (
        ("archive", storage.archive),
        ("quarantine", storage.quarantine),
        ("inbox", storage.inbox),
    ):
        if inside(absolute(root), Path(path)):
            return Whereabouts(name, path, _present(absolute(root), Path(path)))
    return Whereabouts("outside the configured folders", path, False)


def _present(root: Path, path: Path) -> bool:
    try:
        read_held(root, path, max_bytes=0)
    except OSError:
        return False
    return True
