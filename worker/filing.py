"""Where files go after screening: the archive (content addressed) or the quarantine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from db.types import utcnow
from worker.confined import NAME_MAX, Placement, fit_name, inside, write_text

REASON_SUFFIX = ".reason.json"
HEATMAP_SUFFIX = ".heatmap.png"


@dataclass(frozen=True, slots=True)
class Filing:
    """The service's folders, absolute: files are read and moved only inside them."""

    inbox: Path
    archive: Path
    quarantine: Path

    def root_of(self, path: Path) -> Path | None:
        """The folder `path` is written inside (no symlink resolved), or None."""
        for root in (self.inbox, self.archive, self.quarantine):
            if inside(root, path):
                return root
        return None

    def placement(self, path: Path) -> Placement | None:
        """`path` with the folder it lies in, or None when it is in none of them."""
        root = self.root_of(path)
        return None if root is None else Placement(root, path)


def archive_path(archive: Path, *, sha256: str, received_at: datetime, suffix: str) -> Path:
    """`archive/YYYY/MM/DD/<sha256><suffix>`: unique by content, browsable by date."""
    day = received_at.strftime("%Y/%m/%d")
    return archive / day / fit_name(f"{sha256}{suffix.lower()}")


def heatmap_path(archive: Path, *, sha256: str, received_at: datetime) -> Path:
    """`archive/YYYY/MM/DD/<sha256>.heatmap.png`: beside the archived file it explains."""
    day = received_at.strftime("%Y/%m/%d")
    return archive / day / f"{sha256}{HEATMAP_SUFFIX}"


def quarantine_path(quarantine: Path, *, sha256: str, received_at: datetime, name: str) -> Path:
    """`quarantine/YYYY/MM/DD/<sha12>_<original name>`: findable by the name people know.

    The name is shortened (extension kept) so that it and its reason file fit in a
    file system's 255 bytes whatever the original name was.
    """
    day = received_at.strftime("%Y/%m/%d")
    limit = NAME_MAX - len(REASON_SUFFIX)
    return quarantine / day / fit_name(f"{sha256[:12]}_{name}", limit)


def reason_path(path: Path) -> Path:
    """`<file>.reason.json` beside a quarantined file."""
    return path.with_name(path.name + REASON_SUFFIX)


def write_reason(
    path: Path, *, root: Path, status: str, code: str, message: str, source_path: str
) -> Path:
    """Write `<file>.reason.json` beside a quarantined file (inside `root`): why it is there."""
    text = (
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
    return write_text(root, reason_path(path), text)
