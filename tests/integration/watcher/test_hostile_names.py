"""Item 10 of the adversarial set: a name that is not UTF-8 is taken, never retried forever."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from db.models import ScanStatus
from tests.integration.watcher.conftest import Stack, running
from tests.processes import wait_until

pytestmark = pytest.mark.adversarial


def test_item10_a_file_whose_name_is_not_utf8_is_taken_under_an_escaped_name(
    stack: Stack, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jpeg = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0]
    raw_name = b"scan-\xff\xfe.jpeg"
    with running(stack) as live:
        target = os.path.join(os.fsencode(stack.inbox), raw_name)  # noqa: PTH118 - bytes
        shutil.copyfile(jpeg, target)
        wait_until(lambda: len(stack.scans()) == 1, timeout=30, what="the scan to be recorded")
        live.assert_alive()
    [scan] = stack.scans()
    assert scan.status is ScanStatus.QUEUED
    assert Path(scan.source_path).name == "scan-%FF%FE.jpeg"
    assert Path(scan.source_path).read_bytes() == jpeg.read_bytes()
    assert scan.sha256 == hashlib.sha256(jpeg.read_bytes()).hexdigest()
    assert not os.path.exists(target), "renamed, not copied"  # noqa: PTH110 - bytes
    assert "its name is not valid UTF-8" in caplog.text
    assert "could not take" not in caplog.text, "never retried in a loop"
