"""The typed errors: status and code per class, messages with file, problem and remedy."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from db.models import ScanStatus
from worker.errors import ContentChanged, OutsideFolders, scan_status
from worker.imaging.errors import (
    Disposition,
    MultiFrame,
    NoPixelData,
    NotAChest,
    NotARadiograph,
    ScreeningError,
    TooLarge,
    TransientError,
    UnreadableScan,
    brief,
)


@pytest.mark.parametrize(
    ("error_type", "status", "code"),
    [
        (UnreadableScan, Disposition.FAILED, "unreadable"),
        (NoPixelData, Disposition.REJECTED, "no_pixel_data"),
        (MultiFrame, Disposition.REJECTED, "multi_frame"),
        (NotARadiograph, Disposition.REJECTED, "not_a_radiograph"),
        (NotAChest, Disposition.REJECTED, "not_a_chest"),
        (TooLarge, Disposition.REJECTED, "too_large"),
    ],
)
def test_each_error_maps_to_a_status_and_a_stable_code(
    error_type: type[ScreeningError], status: Disposition, code: str
) -> None:
    error = error_type(Path("/inbox/site/scan.dcm"), "is wrong", "do this")

    assert isinstance(error, ScreeningError)
    assert (error.status, error.code) == (status, code)
    assert error.path == Path("/inbox/site/scan.dcm")
    assert str(error) == error.message == "scan.dcm: is wrong; do this"


def test_errors_survive_pickling_across_worker_processes() -> None:
    error = NotAChest(Path("hip.dcm"), "Body Part Examined is 'HIP', not a chest", "send a chest")
    transient = TransientError(Path("a.dcm"), "could not be read", "retry")

    # Our own bytes, round-tripped: nothing untrusted is unpickled.
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301
    transient_copy = pickle.loads(pickle.dumps(transient))  # noqa: S301

    assert type(copy) is NotAChest
    assert (copy.path, copy.message, copy.status) == (error.path, error.message, error.status)
    assert transient_copy.message == transient.message


def test_transient_error_is_not_a_screening_error() -> None:
    error = TransientError(None, "could not be read (Input/output error)", "the worker retries")

    assert not isinstance(error, ScreeningError)
    assert error.message == "<input>: could not be read (Input/output error); the worker retries"


def test_io_failures_while_reading_are_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.imaging import decode_path

    path = tmp_path / "scan.dcm"
    path.write_bytes(b"x" * 10)

    def broken_open(*_args: object, **_kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "open", broken_open)
    with pytest.raises(
        TransientError, match=r"scan\.dcm: could not be read \(Input/output error\)"
    ):
        decode_path(path)


def test_brief_makes_multi_line_decoder_messages_one_short_line() -> None:
    message = brief(RuntimeError("Unable to decode:\n  pylibjpeg: error\n  pillow: " + "x" * 400))

    assert "\n" not in message
    assert message.startswith("Unable to decode: pylibjpeg: error pillow: ")
    assert len(message) == 300


def test_a_file_still_growing_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.imaging import decode_path

    path = tmp_path / "copying.dcm"
    path.write_bytes(b"x" * 100)
    real_stat = Path.stat

    def stale_stat(self: Path, **kwargs: bool) -> os.stat_result:
        result = real_stat(self, **kwargs)
        fields = list(result)
        fields[6] = 10  # st_size as it was when the copy had just begun
        return os.stat_result(fields)

    monkeypatch.setattr(Path, "stat", stale_stat)
    with pytest.raises(TransientError, match=r"copying\.dcm: grew while being read"):
        decode_path(path)


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        (UnreadableScan, ScanStatus.FAILED),
        (NotAChest, ScanStatus.REJECTED),
        (TooLarge, ScanStatus.REJECTED),
        (ContentChanged, ScanStatus.FAILED),
        (OutsideFolders, ScanStatus.FAILED),
    ],
)
def test_the_screening_layer_maps_each_disposition_to_the_scan_status(
    error_type: type[ScreeningError], status: ScanStatus
) -> None:
    """The decoder knows no scan rows; the screening layer records its verdict."""
    assert scan_status(error_type(Path("a.dcm"), "is wrong", "do this")) is status
