"""Item 15: what the service writes holds patient data and is never world-readable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.integration.pacs.conftest import (
    RECEIVER_AE,
    SENDER_AE,
    dicom_tool,
    receiver_env,
    storescu_profile,
)
from tests.processes import Service, free_port

LOGIN_UMASK = 0o022  # what a usual login shell or systemd unit gives


@contextmanager
def _login_umask() -> Iterator[None]:
    # Children inherit the umask at spawn: the service must set its own.
    old = os.umask(LOGIN_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_item15_an_old_world_readable_database_loses_access_for_others(tmp_path: Path) -> None:
    """A database made by an older version (0644) is closed to others."""
    database = tmp_path / "var" / "cxr.db"
    database.parent.mkdir()
    env = {"CXR_DATABASE_URL": f"sqlite:///{database}"}
    assert run_cli("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    database.chmod(0o644)
    with _login_umask():
        out = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert _mode(database) == 0o640


@pytest.mark.integration
def test_item15_received_scans_and_their_folders_are_not_world_readable(
    dicom_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    inbox = tmp_path / "inbox"
    with _login_umask():
        service = Service(
            ["receive"],
            cwd=tmp_path,
            env=receiver_env(inbox, port, SENDER_AE),
            log=tmp_path / "receive.log",
        )
    file = dicom_dir / "cr_chest_sc_jpeg_baseline.dcm"
    config, profile = storescu_profile([file], tmp_path / "storescu.cfg")
    try:
        service.wait_for_log("receiving DICOM as", timeout=60)
        sent = subprocess.run(
            [dicom_tool("storescu", "dcmtk"), "--config-file", str(config), profile,
             "-aet", SENDER_AE, "-aec", RECEIVER_AE, "127.0.0.1", str(port), str(file)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        assert service.stop(timeout=20) == 0, service.output()[-2000:]
    assert sent.returncode == 0, sent.stderr
    [received] = [p for p in inbox.rglob("*") if p.is_file()]
    assert _mode(received) == 0o640
    for folder in (inbox, received.parent):
        assert _mode(folder) & 0o007 == 0, f"{folder} is {oct(_mode(folder))}"


def test_item15_the_embedded_broker_database_is_owner_only(tmp_path: Path) -> None:
    """kombu creates the broker's SQLite file itself: under the CLI's umask it is 0640."""
    broker = tmp_path / "var" / "broker.db"
    code = (
        "import os\n"
        "from cxr_screen.cli.main import SERVICE_UMASK\n"
        "from worker.celery_app import prepare_embedded_broker\n"
        "from worker.settings import load_settings\n"
        "os.umask(SERVICE_UMASK)  # as main() does\n"
        "prepare_embedded_broker(load_settings())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_BROKER_URL=f"sqla+sqlite:///{broker}",
        CXR_DATABASE_URL=f"sqlite:///{tmp_path / 'var' / 'cxr.db'}",
    )
    with _login_umask():
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert _mode(broker) == 0o600
