"""Item 14: the receiver caps each instance and speaks DICOM TLS, tested with DCMTK."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pacs.conftest import (
    RECEIVER_AE,
    SENDER_AE,
    dicom_tool,
    receiver_env,
    storescu_profile,
)
from tests.processes import Service, free_port

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a receiver certificate and a sender (client) certificate, all PEM."""
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=test CA", cwd=folder)  # fmt: skip
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", cwd=folder)  # fmt: skip
    return folder


@pytest.fixture
def tls_receiver(pki: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    env = {
        **receiver_env(tmp_path / "inbox", port, SENDER_AE),
        "CXR_DICOM_TLS_CERT": str(pki / "server.crt"),
        "CXR_DICOM_TLS_KEY": str(pki / "server.key"),
        "CXR_DICOM_TLS_CA": str(pki / "ca.crt"),
        "CXR_PSEUDONYM_KEY": "adversarial-test-pseudonym-key-0123",
    }
    service = Service(["receive"], cwd=tmp_path, env=env, log=tmp_path / "receive.log")
    try:
        service.wait_for_log("TLS, client certificates required", timeout=60)
        yield port, tmp_path / "inbox"
    finally:
        service.stop(timeout=20)


def _send(port: int, file: Path, *tls: str) -> subprocess.CompletedProcess[str]:
    # Each file proposed in its own transfer syntax (storescu offers only uncompressed
    # by default).
    config, profile = storescu_profile([file], Path(tempfile.mkdtemp()) / "storescu.cfg")
    return subprocess.run(
        [dicom_tool("storescu", "dcmtk"), "--config-file", str(config), profile, *tls,
         "-aet", SENDER_AE, "-aec", RECEIVER_AE, "127.0.0.1", str(port), str(file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_item14_tls_with_a_trusted_client_certificate_is_received(
    tls_receiver: tuple[int, Path], pki: Path, dicom_dir: Path
) -> None:
    port, inbox = tls_receiver
    file = dicom_dir / "cr_chest_sc_jpeg_baseline.dcm"
    tls = ("+tls", str(pki / "client.key"), str(pki / "client.crt"), "+cf", str(pki / "ca.crt"))
    sent = _send(port, file, *tls)
    assert sent.returncode == 0, sent.stderr
    assert len(list(inbox.rglob("*.dcm"))) == 1


def test_item14_plain_tcp_and_a_sender_without_certificate_are_refused(
    tls_receiver: tuple[int, Path], pki: Path, dicom_dir: Path
) -> None:
    port, inbox = tls_receiver
    file = dicom_dir / "cr_chest_sc_jpeg_baseline.dcm"
    assert _send(port, file).returncode != 0, "plain TCP to a TLS port"
    anonymous = _send(port, file, "+tla", "+cf", str(pki / "ca.crt"))
    assert anonymous.returncode != 0, "TLS without a client certificate"
    assert not list(inbox.rglob("*.dcm")) if inbox.exists() else True


def test_item14_an_instance_over_the_size_cap_is_refused_and_not_stored(
    dicom_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **receiver_env(tmp_path / "inbox", port, SENDER_AE),
        "CXR_MAX_FILE_MB": "0.05",
        "CXR_PSEUDONYM_KEY": "adversarial-test-pseudonym-key-0123",
    }
    file = dicom_dir / "cr_chest_pa_mono1_j2k_lossless.dcm"
    assert file.stat().st_size > 0.05 * 1024**2
    service = Service(["receive"], cwd=tmp_path, env=env, log=tmp_path / "receive.log")
    try:
        service.wait_for_log("receiving DICOM as", timeout=60)
        sent = _send(port, file)
    finally:
        service.stop(timeout=20)
    assert sent.returncode != 0 or "0xa7" in (sent.stdout + sent.stderr).lower()
    assert not list((tmp_path / "inbox").rglob("*.dcm"))
    # Once, although the reader drains the rest of what the sender had already sent.
    assert service.output().count("aborting the association from STORESCU") == 1
    assert "size cap of 0.05 MB (CXR_MAX_FILE_MB)" in service.output()


def test_item14_an_instance_just_over_the_cap_gets_out_of_resources(
    dicom_dir: Path, tmp_path: Path
) -> None:
    """Over the cap but within one PDU's slack: the C-STORE itself is refused (0xA700)."""
    port = free_port()
    env = {
        **receiver_env(tmp_path / "inbox", port, SENDER_AE),
        "CXR_MAX_FILE_MB": "0.1",
        "CXR_PSEUDONYM_KEY": "adversarial-test-pseudonym-key-0123",
    }
    file = dicom_dir / "cr_chest_sc_jpeg_baseline.dcm"
    assert 0.1 * 1024**2 < file.stat().st_size < 0.1 * 1024**2 + 64 * 1024
    service = Service(["receive"], cwd=tmp_path, env=env, log=tmp_path / "receive.log")
    try:
        service.wait_for_log("receiving DICOM as", timeout=60)
        sent = _send(port, file, "--verbose")  # prints the response status
    finally:
        service.stop(timeout=20)
    answer = (sent.stdout + sent.stderr).lower()
    assert "received store response (refused: outofresources)" in answer, answer
    assert not list((tmp_path / "inbox").rglob("*.dcm"))
    assert "over the size cap of 0.1 MB (CXR_MAX_FILE_MB)" in service.output()
