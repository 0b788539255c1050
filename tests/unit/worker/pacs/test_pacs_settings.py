"""The PACS settings: defaults that accept nothing by accident, and errors naming the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CXR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's folder


def test_defaults_receive_nothing_and_send_nothing() -> None:
    settings = load_settings()
    assert settings.pacs.dicom_ae_title == "CXR_SCREEN"
    assert settings.pacs.dicom_port == 11112
    assert settings.pacs.dicom_allowed_aes == ()
    assert settings.pacs.receive_enabled is False
    assert settings.pacs.reports_enabled is False
    assert settings.pacs.report_destination is None
    assert settings.reports_path == Path("archive") / "reports"


def test_environment_variables_configure_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_DICOM_AE_TITLE", " CXR_NODE ")
    monkeypatch.setenv("CXR_DICOM_ALLOWED_AES", "PACS, CR_ROOM1 ,,")
    monkeypatch.setenv("CXR_REPORTS_ENABLED", "true")
    monkeypatch.setenv("CXR_REPORT_DESTINATION", "PACS@pacs.hospital.org:104")
    monkeypatch.setenv("CXR_REPORT_DIR", "/srv/reports")
    settings = load_settings()
    assert settings.pacs.dicom_ae_title == "CXR_NODE"
    assert settings.pacs.dicom_allowed_aes == ("PACS", "CR_ROOM1")
    assert settings.pacs.report_destination == "PACS@pacs.hospital.org:104"
    assert settings.reports_path == Path("/srv/reports")


def test_a_star_allows_any_calling_ae(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_DICOM_ALLOWED_AES", "*")
    assert load_settings().pacs.dicom_allowed_aes == ("*",)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"CXR_DICOM_AE_TITLE": "A" * 17}, r"CXR_DICOM_AE_TITLE: .* the limit is 16"),
        ({"CXR_DICOM_PORT": "0"}, r"CXR_DICOM_PORT: "),
        ({"CXR_DICOM_ALLOWED_AES": "PACS,*"}, r"CXR_DICOM_ALLOWED_AES: `\*` allows any"),
        ({"CXR_DICOM_ALLOWED_AES": "PACS,BAD\\AE"}, r"CXR_DICOM_ALLOWED_AES: .*backslash"),
        ({"CXR_REPORT_DESTINATION": "pacs:104"}, r"CXR_REPORT_DESTINATION: .*AE_TITLE@host:port"),
        ({"CXR_DICOM_BIND_ADDRESS": " "}, r"CXR_DICOM_BIND_ADDRESS: give an address"),
        (
            {"CXR_RECEIVE_ENABLED": "true"},
            r"CXR_RECEIVE_ENABLED: the receiver would refuse every sender: .*ALLOWED_AES",
        ),
        (
            {"CXR_REPORTS_ENABLED": "true"},
            r"CXR_REPORT_DESTINATION: CXR_REPORTS_ENABLED is true but no destination is set",
        ),
        (
            {"CXR_REPORT_RETRY_BASE_S": "600", "CXR_REPORT_RETRY_MAX_S": "60"},
            r"CXR_REPORT_RETRY_MAX_S: 60 s is shorter than CXR_REPORT_RETRY_BASE_S",
        ),
    ],
)
def test_bad_values_name_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()
