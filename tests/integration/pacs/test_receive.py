"""`cxr-screen receive` with DCMTK's storescu and echoscu as the sending modality."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.cli_runner import run_cli
from tests.integration.pacs.conftest import (
    RECEIVER_AE,
    SENDER_AE,
    RunningReceiver,
    dicom_tool,
    receiver_env,
    storescu,
)
from tests.processes import free_port

pytestmark = pytest.mark.integration


def test_every_real_file_arrives_once_as_sent(
    receiver: RunningReceiver, dicom_dir: Path, tmp_path: Path
) -> None:
    files = sorted(dicom_dir.glob("*.dcm"))
    sent = storescu(files, receiver.port, tmp_path=tmp_path)
    assert sent.returncode == 0, sent.stderr
    again = storescu(files, receiver.port, tmp_path=tmp_path)  # a PACS resending a study
    assert again.returncode == 0, again.stderr

    received = receiver.files()
    # The re-send is kept beside the first copy (`<sop>.<sha12>.dcm`), never over it: the
    # watcher records it as a duplicate of the scan. No temporary file is left.
    assert len(received) == 2 * len(files), received
    by_name: dict[Path, bytes] = {p: p.read_bytes() for p in received}
    originals = {dcmread(f).SOPInstanceUID: dcmread(f) for f in files}
    for path in list(by_name):
        copy = dcmread(path)
        target = receiver.inbox / copy.StudyInstanceUID / f"{copy.SOPInstanceUID}.dcm"
        if path != target:
            assert by_name[path] == by_name[target], "the identical re-send, beside"
            assert path.name.startswith(copy.SOPInstanceUID + ".")
            continue
        original = originals.pop(copy.SOPInstanceUID)
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        if len(original.PixelData) % 2:
            # An odd-length Pixel Data value breaks PS3.5 7.1.1; storescu pads it with a
            # zero byte on the wire, as the standard requires.
            assert copy.PixelData == original.PixelData + b"\0"
        else:
            assert copy.PixelData == original.PixelData
    assert originals == {}


def test_an_unknown_calling_ae_title_is_refused(
    receiver: RunningReceiver, dicom_dir: Path, tmp_path: Path
) -> None:
    refused = storescu(
        [dicom_dir / "cr_chest_sc_jpeg_baseline.dcm"], receiver.port, tmp_path=tmp_path,
        calling="INTRUDER",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr
    assert receiver.files() == []
    log = receiver.service.output()
    assert "refusing an association from calling AE 'INTRUDER'" in log


def test_an_association_for_another_ae_title_is_refused(
    receiver: RunningReceiver, dicom_dir: Path, tmp_path: Path
) -> None:
    refused = storescu(
        [dicom_dir / "cr_chest_sc_jpeg_baseline.dcm"], receiver.port, tmp_path=tmp_path,
        called="SOMEONE_ELSE",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stderr
    assert receiver.files() == []


def test_a_sop_class_that_is_not_a_radiograph_is_refused(
    receiver: RunningReceiver, tmp_path: Path
) -> None:
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    assert ct is not None
    refused = storescu([Path(ct)], receiver.port, tmp_path=tmp_path)
    assert refused.returncode != 0
    assert receiver.files() == []


def test_c_echo_is_answered(receiver: RunningReceiver) -> None:
    echo = subprocess.run(
        [dicom_tool("echoscu", "dcmtk"), "-aet", SENDER_AE, "-aec", RECEIVER_AE,
         "127.0.0.1", str(receiver.port)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert echo.returncode == 0, echo.stderr


def test_the_log_names_instances_never_patients(
    receiver: RunningReceiver, dicom_dir: Path, tmp_path: Path
) -> None:
    chest = dicom_dir / "cr_chest_pa_mono1_j2k_lossless.dcm"
    assert storescu([chest], receiver.port, tmp_path=tmp_path).returncode == 0
    header = dcmread(chest, stop_before_pixels=True)
    log = receiver.service.output()
    assert f"received SOP {header.SOPInstanceUID} from {SENDER_AE}" in log
    for value in (str(header.PatientName), str(header.PatientID), str(header.AccessionNumber)):
        assert value not in log


def test_receive_refuses_to_start_without_allowed_ae_titles(tmp_path: Path) -> None:
    out = run_cli(
        "receive", cwd=tmp_path, env=receiver_env(tmp_path / "inbox", free_port(), ""), timeout=60
    )
    assert out.returncode == 2
    assert "CXR_DICOM_ALLOWED_AES is empty" in out.stderr
    assert "or * to accept any" in out.stderr


def test_receive_says_when_its_port_is_taken(receiver: RunningReceiver, tmp_path: Path) -> None:
    out = run_cli(
        "receive",
        cwd=tmp_path,
        env=receiver_env(tmp_path / "other", receiver.port, SENDER_AE),
        timeout=60,
    )
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{receiver.port}" in out.stderr
    assert "CXR_DICOM_PORT" in out.stderr


def _corrected_resend(first: Path, other: Path, path: Path) -> Path:
    """`other`'s pixels under `first`'s Study/Series/SOP Instance UIDs: a corrected re-send."""
    original = dcmread(first)
    corrected = dcmread(other)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(corrected, keyword, getattr(original, keyword))
    corrected.file_meta.MediaStorageSOPInstanceUID = original.SOPInstanceUID
    corrected.save_as(path, enforce_file_format=True)
    return path


def test_item1_a_corrected_resend_is_kept_beside_the_first_never_over_it(
    receiver: RunningReceiver, dicom_dir: Path, tmp_path: Path
) -> None:
    """Issue 13 item 1: the same SOP Instance UID with other pixels must not replace the first."""
    first = dicom_dir / "dx_chest_pa_mono1_inverse_plut_j2k.dcm"
    corrected = _corrected_resend(
        first, dicom_dir / "cr_chest_pa_mono1_j2k_lossless.dcm", tmp_path / "corrected.dcm"
    )
    header = dcmread(first, stop_before_pixels=True)
    folder = receiver.inbox / str(header.StudyInstanceUID)
    target = folder / f"{header.SOPInstanceUID}.dcm"

    assert storescu([first], receiver.port, tmp_path=tmp_path).returncode == 0
    [stored_first] = receiver.files()
    assert stored_first == target
    first_bytes = target.read_bytes()  # as received: what the scan's SHA-256 will be of

    assert storescu([corrected], receiver.port, tmp_path=tmp_path).returncode == 0
    files = receiver.files()
    assert len(files) == 2, files
    assert target.read_bytes() == first_bytes, "the first instance was overwritten"
    [beside] = [p for p in files if p != target]
    second_bytes = beside.read_bytes()
    received = dcmread(beside)
    assert received.SOPInstanceUID == header.SOPInstanceUID
    assert received.PixelData.rstrip(b"\0") == dcmread(corrected).PixelData.rstrip(b"\0")
    assert received.PixelData != dcmread(target).PixelData
    assert beside.name.startswith(f"{header.SOPInstanceUID}.")
    assert beside.suffix == ".dcm"
    assert len(beside.name.encode()) <= 255
    assert not beside.name.startswith(".")

    # An identical re-send of the first is kept beside too (the watcher records it as a
    # duplicate); one of the second, whose copy is still waiting, adds nothing (see
    # publish_new). Still nothing is replaced.
    for sent in (first, corrected):
        assert storescu([sent], receiver.port, tmp_path=tmp_path).returncode == 0
    contents = sorted(p.read_bytes() for p in receiver.files())
    assert contents == sorted([first_bytes, first_bytes, second_bytes])
    assert target.read_bytes() == first_bytes
    assert beside.read_bytes() == second_bytes
    assert all(not p.name.startswith(".") for p in folder.iterdir()), "no temporary left"
    log = receiver.service.output()
    assert log.count(f"received SOP {header.SOPInstanceUID} from {SENDER_AE} again") == 3
