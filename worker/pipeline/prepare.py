"""Stage 1, prepare: a file's bytes -> the model's input and the header facts of its scan."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.confined import FileIdentity, HeldFile, LeavesFolder, NotRegularFile, read_held
from worker.imaging import DecodeOptions, ScanMetadata, decode_bytes, to_model_input
from worker.imaging.errors import ScreeningError, TooLarge, TransientError, UnreadableScan, brief

# Big JPEGs are draft-decoded (libjpeg DCT scaling) to this multiple of the model's input
# side, never less: decoding straight to the input side moves sharp edges by up to half a
# JPEG block, while at twice the side the model input is within half a grey level of a
# full decode (bench/results/decode.md) at a fraction of the cost.
DRAFT_FACTOR = 2


@dataclass(frozen=True, slots=True)
class ModelInput:
    """How files become the input of a model of side `size`: the one rule for everyone.

    Build it with `ModelInput.of`; serving, screening, training, evaluation and the
    feature cache all do, so they decode the same bytes to the same pixels.
    """

    size: int
    options: DecodeOptions

    @classmethod
    def of(cls, size: int, options: DecodeOptions) -> ModelInput:
        """The input of a model of side `size` under the site's decoder `options`."""
        if size <= 0:
            raise ValueError(f"model input size {size} must be positive")
        if options.draft_size is not None:
            options = replace(options, draft_size=DRAFT_FACTOR * size)
        return cls(size, options)

    @property
    def cache_tag(self) -> str:
        """The decoder settings that change pixels, for the feature-cache key."""
        return f"worker.imaging;draft={self.options.draft_size}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A file decoded into model input, with the header columns for its scan row.

    `sha256` is the hash of the very bytes that were decoded.
    """

    image: npt.NDArray[np.uint8]
    header: dict[str, Any]
    sha256: str


def header_columns(metadata: ScanMetadata) -> dict[str, Any]:
    """The scans-table columns the decoder learnt from the file's header."""
    return {
        "format": metadata.format,
        "modality": metadata.modality,
        "body_part": metadata.body_part,
        "view_position": metadata.view_position,
        "sop_instance_uid": metadata.sop_instance_uid,
        "study_instance_uid": metadata.study_instance_uid,
        "series_instance_uid": metadata.series_instance_uid,
        "patient_ref": metadata.patient_ref,
    }


def prepare_bytes(held: HeldFile, model_input: ModelInput) -> Prepared | ScreeningError:
    """Decode bytes already read (and hashed) into model input, or the reason it fails.

    Bad files come back as the error (not raised) so one file never sinks its batch;
    transient I/O errors are raised.
    """
    path = held.path
    try:
        radiograph = decode_bytes(held.data, path, model_input.options)
        return Prepared(
            to_model_input(radiograph, model_input.size),
            header_columns(radiograph.metadata),
            held.sha256,
        )
    except ScreeningError as exc:
        return exc
    except TransientError:
        raise
    except (ValueError, TypeError, RuntimeError, OSError, MemoryError) as exc:
        # A decoder library failing in a way it does not document: the file is the
        # likeliest cause, so record it against the file rather than crash the batch.
        return UnreadableScan(
            path, f"the decoder failed: {brief(exc)}", "inspect the file with `cxr-screen inspect`"
        )


def prepare_file(
    path: Path, model_input: ModelInput, *, follow_symlinks: bool = False
) -> Prepared | ScreeningError:
    """Read `path` once and decode those bytes (see `prepare_bytes`).

    For files a person names (`cxr-screen screen`, labelled folders, benches): the path
    is theirs, so only its last component must not be a symlink, unless
    `follow_symlinks` (labelled folders are often links into an image store).

    Raises:
        TransientError: an I/O error worth retrying.
    """
    if follow_symlinks:
        path = path.resolve()
    try:
        held = read_held(path.parent, path, max_bytes=model_input.options.max_file_bytes)
    except (FileNotFoundError, NotADirectoryError):
        return file_gone(path)
    except (LeavesFolder, NotRegularFile) as exc:
        return UnreadableScan(path, f"is not a regular file ({exc.strerror})", "give a file")
    except OSError as exc:
        raise unreadable_now(path, exc) from exc
    if isinstance(held, FileIdentity):
        return over_cap(path, held.size, model_input.options)
    return prepare_bytes(held, model_input)


def file_gone(path: Path) -> UnreadableScan:
    """The file is not where it was recorded or named."""
    return UnreadableScan(
        path,
        "the file is gone from where it was recorded",
        "it was moved or deleted outside cxr-screen; drop it in the inbox again",
    )


def over_cap(path: Path, size: int, options: DecodeOptions) -> TooLarge:
    """The file is over CXR_MAX_FILE_MB (found before a byte was decoded)."""
    return TooLarge(
        path,
        f"is {size / 1024**2:.1f} MB, over the cap of {options.max_file_bytes / 1024**2:g} MB",
        "raise CXR_MAX_FILE_MB if such files are legitimate",
    )


def unreadable_now(path: Path, exc: OSError) -> TransientError:
    """An I/O error reading the file: the storage's fault, worth a retry."""
    return TransientError(
        path,
        f"could not be read ({exc.strerror or exc})",
        "the worker retries; if this persists check the share, disk and permissions",
    )
