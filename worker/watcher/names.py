"""Which paths in the inbox are candidate scans: temporary and hidden names, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

# Names that writers use while a file is incomplete (browsers, WinSCP, rsync, our own
# filing) or that desktops leave behind. They are taken only once renamed.
TEMPORARY_SUFFIXES = (
    ".part",
    ".partial",
    ".tmp",
    ".temp",
    ".crdownload",
    ".download",
    ".filepart",
    ".swp",
)
DESKTOP_LITTER = frozenset({"thumbs.db", "desktop.ini"})


def ignored_reason(relative: Path) -> str | None:
    """Why a path (relative to the inbox) is not a candidate, or None when it is.

    A hidden folder anywhere on the way (`.snapshot` on a NAS, rsync's temporary
    folders, `.Trash`) hides everything below it.
    """
    for part in relative.parts[:-1]:
        if part.startswith("."):
            return f"inside the hidden folder {part}"
    name = relative.name
    lowered = name.lower()
    if name.startswith("."):
        return "hidden name"
    if name.endswith("~"):
        return "backup/temporary name (ends with ~)"
    if lowered.endswith(TEMPORARY_SUFFIXES):
        return "temporary name (taken once renamed)"
    if lowered in DESKTOP_LITTER:
        return "desktop litter"
    return None


def is_hidden_dir(name: str) -> bool:
    """Folders the inbox walk does not enter."""
    return name.startswith(".")


def resolves_inside(path: Path, root_real: str) -> bool:
    """Whether `path`, with every symlink on the way resolved, lies inside `root_real`.

    `root_real` is `os.path.realpath` of the inbox. A symlinked folder inside the inbox
    that points elsewhere fails this, so files are never taken from outside the inbox.
    """
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def is_text(path: Path) -> bool:
    """Whether `path` is valid UTF-8 text (the database, logs and reports store text).

    Python carries undecodable bytes of a file name as lone surrogates, which no
    database driver accepts.
    """
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped(relative: Path) -> Path:
    """`relative` with each byte that is not UTF-8 written as `%XX` (e.g. `scan%FF.dcm`)."""
    return Path(*(_escape_part(part) for part in relative.parts))


def _escape_part(part: str) -> str:
    # Undecodable bytes arrive as the surrogates U+DC80..U+DCFF (PEP 383).
    return "".join(
        f"%{ord(char) - 0xDC00:02X}" if 0xDC80 <= ord(char) <= 0xDCFF else char for char in part
    )
