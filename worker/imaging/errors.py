"""The decoder's typed errors: each names its file, whether the file is out of scope or
broken, and a stable code.

The decoder knows nothing of scan rows: `worker.errors.scan_status` maps a `Disposition`
to the status the screening layer records.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import ClassVar


class Disposition(enum.StrEnum):
    """What a file that gives no model input is: out of scope, or broken."""

    REJECTED = "rejected"  # a valid file that is not ours to screen (a CT, a hip, too large)
    FAILED = "failed"  # a broken file, or one that cannot be screened


class FileError(Exception):
    """An error about one file, worded for the person who can fix it.

    Every message has three parts: which file, what is wrong with it and what to do,
    e.g. ``cr_hip.dcm: Body Part Examined is 'HIP', not a chest; only chest radiographs
    are screened (...)``. Messages name the file, never the patient.

    Attributes:
        path: The file, or None when the input was not a file.
        problem: What is wrong, without the file name.
        remedy: What to do about it.
    """

    def __init__(self, path: Path | None, problem: str, remedy: str) -> None:
        self.path = path
        self.problem = problem
        self.remedy = remedy
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The full sentence: file, problem, remedy."""
        name = self.path.name if self.path is not None else "<input>"
        return f"{name}: {self.problem}; {self.remedy}"

    def __reduce__(self) -> tuple[type[FileError], tuple[Path | None, str, str]]:
        # Celery's prefork pool pickles exceptions across processes; the default
        # reduction would call __init__ with the message as the only argument.
        return (type(self), (self.path, self.problem, self.remedy))


class ScreeningError(FileError):
    """A file that gives no model input, and why.

    Attributes:
        status: `rejected` for a valid file that is out of scope, `failed` for a broken
            one (`worker.errors.scan_status` turns it into the scan's status).
        code: A short, stable snake_case identifier for logs, metrics and the database.
    """

    status: ClassVar[Disposition] = Disposition.FAILED
    code: ClassVar[str] = "screening_error"


class UnreadableScan(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """Corrupt, truncated, undecodable or of a format the decoder does not know."""

    status = Disposition.FAILED
    code = "unreadable"


class NoPixelData(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """A DICOM object without an image, such as a structured report."""

    status = Disposition.REJECTED
    code = "no_pixel_data"


class MultiFrame(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """A DICOM image with more than one frame; only single radiographs are screened."""

    status = Disposition.REJECTED
    code = "multi_frame"


class NotARadiograph(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """An image of another modality (CT, MR, US, ...)."""

    status = Disposition.REJECTED
    code = "not_a_radiograph"


class NotAChest(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """A radiograph whose Body Part Examined is explicitly not a chest."""

    status = Disposition.REJECTED
    code = "not_a_chest"


class TooLarge(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """Over the file-size or decoded-pixel cap (a decompression bomb, or a wrong file)."""

    status = Disposition.REJECTED
    code = "too_large"


class NoUsableContent(ScreeningError):  # noqa: N818 (the interface names outcomes)
    """Pixels that carry no image: non-finite rescale values, or one flat value throughout.

    A verdict on such an input would be the model's answer to nothing.
    """

    status = Disposition.FAILED
    code = "no_usable_content"


class TransientError(FileError):
    """An I/O failure worth retrying (network share hiccup, file locked, disk error).

    Deliberately not a `ScreeningError`: it says nothing about the scan itself. The
    worker retries the task and records `failed` only when the retries run out. A file
    that no longer exists is not transient (retrying cannot bring it back): that is an
    `UnreadableScan`.
    """

    code: ClassVar[str] = "transient_io"


def brief(exc: BaseException, limit: int = 300) -> str:
    """A third-party exception as one short line for a message (decoders write several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
