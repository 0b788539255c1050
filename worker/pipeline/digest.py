"""SHA-256 of a file's bytes: scans, labelled images, model artifacts and weights files."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """SHA-256 of the file at `path`, streamed (artifacts are hundreds of MB)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
