"""Real DICOM peers for the PACS tests: DCMTK, Orthanc and dciodvfy from Debian packages."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.processes import Service, free_port, wait_until
from worker.pacs.aet import Destination

RECEIVER_AE = "CXR_SCREEN"
SENDER_AE = "STORESCU"
ORTHANC_AE = "ORTHANC"


def dicom_tool(name: str, package: str) -> str:
    """The path of a DICOM tool, or skip saying which Debian package provides it."""
    # Orthanc lives in /usr/sbin, which is not on a normal user's PATH.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip(
            f"{name} is not installed: apt-get install {package} "
            "(deploy/test.sh installs it when run as root)"
        )
    return found


@dataclass(frozen=True, slots=True)
class RunningReceiver:
    """A `cxr-screen receive` process and where it listens and writes."""

    service: Service
    port: int
    inbox: Path

    def files(self) -> list[Path]:
        """Every file under the inbox, hidden ones included."""
        return sorted(p for p in self.inbox.rglob("*") if p.is_file())


def receiver_env(inbox: Path, port: int, allowed: str) -> dict[str, str]:
    """Settings of a receiver on loopback."""
    return {
        "CXR_INBOX": str(inbox),
        "CXR_DICOM_AE_TITLE": RECEIVER_AE,
        "CXR_DICOM_PORT": str(port),
        "CXR_DICOM_BIND_ADDRESS": "127.0.0.1",
        "CXR_DICOM_ALLOWED_AES": allowed,
        "CXR_DICOM_TIMEOUT_S": "10",
        "CXR_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[RunningReceiver]:
    """`cxr-screen receive` on a free loopback port, taking STORESCU and ORTHANC only."""
    port = free_port()
    inbox = tmp_path / "inbox"
    service = Service(
        ["receive"],
        cwd=tmp_path,
        env=receiver_env(inbox, port, f"{SENDER_AE},{ORTHANC_AE}"),
        log=tmp_path / "receive.log",
    )
    try:
        service.wait_for_log("receiving DICOM as", timeout=60)
        yield RunningReceiver(service, port, inbox)
    finally:
        code = service.stop(timeout=20)
    assert code == 0, f"receive exited with {code}:\n{service.output()[-2000:]}"


def storescu_profile(files: list[Path], path: Path) -> tuple[Path, str]:
    """A storescu configuration proposing each file's SOP class in its own transfer syntax.

    One presentation context per (SOP class, transfer syntax), so every file travels as
    it is stored (storescu's defaults propose uncompressed syntaxes only).
    """
    pairs = sorted(
        {
            (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            for meta in (dcmread(f, stop_before_pixels=True).file_meta for f in files)
        }
    )
    syntaxes = sorted({ts for _, ts in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for number, syntax in enumerate(syntaxes):
        lines += [f"[TS{number}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Files]"]
    for number, (sop_class, syntax) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{number} = {sop_class}\\TS{syntaxes.index(syntax)}")
    lines += ["[[Profiles]]", "[CXR]", "PresentationContexts = Files"]
    path.write_text("\n".join(lines) + "\n")
    return path, "CXR"


def storescu(
    files: list[Path],
    port: int,
    *,
    tmp_path: Path,
    calling: str = SENDER_AE,
    called: str = RECEIVER_AE,
) -> subprocess.CompletedProcess[str]:
    """Send `files` with DCMTK's storescu as a modality does, each in its stored syntax."""
    config, profile = storescu_profile(files, tmp_path / "storescu.cfg")
    return subprocess.run(
        [
            dicom_tool("storescu", "dcmtk"),
            "--config-file", str(config), profile,
            "--no-halt",
            "--aetitle", calling,
            "--call", called,
            "127.0.0.1", str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


class StoreSCP:
    """DCMTK's `storescp` as a simple PACS on a free loopback port."""

    ae_title = "PACS"

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.received = workdir / "received"
        self.received.mkdir(parents=True)
        self._log = (workdir / "storescp.log").open("wb")
        self.process = subprocess.Popen(
            [
                dicom_tool("storescp", "dcmtk"),
                "--aetitle", self.ae_title,
                "--output-directory", str(self.received),
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._listening, timeout=20, what=f"storescp on port {self.port}")

    @property
    def destination(self) -> Destination:
        return Destination(self.ae_title, "127.0.0.1", self.port)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    """A running storescp; stopped afterwards."""
    scp = StoreSCP(tmp_path / "storescp")
    try:
        yield scp
    finally:
        scp.stop()


class Orthanc:
    """A private Orthanc (Debian package) on free loopback ports, with a generated config."""

    ae_title = ORTHANC_AE

    def __init__(self, workdir: Path, *, modalities: dict[str, tuple[str, str, int]]) -> None:
        binary = dicom_tool("Orthanc", "orthanc")
        self.http_port = free_port()
        self.dicom_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cxr-screen-test",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            # Loopback only, no users: a throwaway PACS for this test.
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            # Reports must be addressed to this AE title; any AE may store (cxr-screen).
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {name: list(entry) for name, entry in modalities.items()},
            "Plugins": [],
            "SaveJobs": False,
            "DicomScuTimeout": 30,
        }
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        (workdir / "logs").mkdir(exist_ok=True)
        self._log = (workdir / "orthanc.out").open("wb")
        self.process = subprocess.Popen(
            [binary, f"--logdir={workdir / 'logs'}", str(config_path)],
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, timeout=30, what=f"Orthanc on HTTP port {self.http_port}")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Orthanc exited with {self.process.returncode}")
        try:
            self.get("/system")
        except OSError:
            return False
        return True

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method
        )
        # Our own loopback URL, http by construction.
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return bytes(response.read())

    def get(self, path: str) -> Any:
        """GET a REST resource as JSON."""
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        """GET a REST resource as bytes (e.g. `/instances/{id}/file`)."""
        return self._request("GET", path)

    def post(self, path: str, body: bytes | object) -> Any:
        """POST bytes, or JSON for anything else; the answer as JSON."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return json.loads(self._request("POST", path, data))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
