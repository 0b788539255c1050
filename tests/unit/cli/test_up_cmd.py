"""What `cxr-screen up` supervises, by settings."""

from __future__ import annotations

from cxr_screen.cli.up_cmd import CLI, children
from worker.settings import load_settings


def test_up_runs_the_receiver_and_the_web_pages_only_when_enabled() -> None:
    names = [spec.name for spec in children(load_settings())]
    assert names == ["watcher", "worker", "trainer", "beat"]
    settings = load_settings(receive_enabled=True, dicom_allowed_aes="MODALITY", web_enabled=True)
    specs = {spec.name: spec.argv for spec in children(settings)}
    assert list(specs) == ["watcher", "worker", "trainer", "beat", "receiver", "web"]
    assert specs["web"] == (*CLI, "web")
