"""Where files go after screening: the archive (content addressed) or the quarantine."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

from db.types import utcnow


def archive_path(archive: Path, *, sha256: str, received_at: datetime, suffix: str) -> Path:
    """`archive/YYYY/MM/DD/<sha256><suffix>`: unique by content, browsable by date."""
    day = received_at.strftime("%Y/%m/%d")
    return archive / day / f"{sha256}{suffix.lower()}"


def quarantine_path(quarantine: Path, *, sha256: str, received_at: datetime, name: str) -> Path:
    """`quarantine/YYYY/MM/DD/<sha12>_<original name>`: findable by the name people know."""
    day = received_at.strftime("%Y/%m/%d")
    return quarantine / day / f"{sha256[:12]}_{name}"


def move_file(source: Path, destination: Path) -> Path:
    """Move `source` to `destination` (across file systems too); never overwrite or lose.

    When the destination already exists (a re-run after a crash between the move and the
    database update), the source is a second copy of the same content and is removed.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        if source.exists() and source.resolve() != destination.resolve():
            source.unlink()
        return destination
    # shutil.move renames within a file system and copies then deletes across them; the
    # temporary name keeps a half-copied file from ever sitting at the final name.
    partial = destination.with_name(destination.name + ".partial")
    shutil.move(source, partial)
    partial.replace(destination)
    return destination


def write_reason(path: Path, *, status: str, code: str, message: str, source_path: str) -> Path:
    """Write `<file>.reason.json` beside a quarantined file: why it is there."""
    reason = path.with_name(path.name + ".reason.json")
    reason.write_text(
        json.dumps(
            {
                "status": status,
                "code": code,
                "message": message,
                "source_path": source_path,
                "quarantined_at": utcnow().isoformat(),
            },
            indent=2,
        )
        + "\n"
    )
    return reason
