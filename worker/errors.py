"""The screening layer's errors about one scan, and the scan status of any file error.

The decoder's errors (`worker.imaging.errors`) say what is wrong with a file's content;
these say what went wrong with a scan's file around the decoder: its bytes changed
after intake, it left the service's folders, or it could not be filed.
"""

from __future__ import annotations

from db.models import ScanStatus
from worker.imaging.errors import Disposition, ScreeningError


def scan_status(error: ScreeningError) -> ScanStatus:
    """The status a scan gets for `error`: `rejected` (out of scope) or `failed`."""
    return ScanStatus.REJECTED if error.status is Disposition.REJECTED else ScanStatus.FAILED


class ContentChanged(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """The file no longer holds the bytes recorded at intake (overwritten or swapped).

    No prediction is made: the verdict would belong to other bytes than the scan's
    SHA-256. New content in the inbox is taken by the watcher as a new scan.
    """

    status = Disposition.FAILED
    code = "content_changed"


class OutsideFolders(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """The scan's path leaves the folder it must be in (a symlink swapped in after intake)."""

    status = Disposition.FAILED
    code = "outside_folders"


class FilingFailed(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """The file could not be moved to the archive or quarantine (its name, a folder in
    the way); it stays where it is and the rest of its batch carries on."""

    status = Disposition.FAILED
    code = "filing_failed"
