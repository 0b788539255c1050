"""Decoder options from settings, and the pseudonym key and patient reference."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from worker.decode_config import decode_options
from worker.imaging import DecodeOptions
from worker.imaging.pseudonym import load_or_create_key, patient_ref
from worker.settings import load_settings


def test_options_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_MAX_FILE_MB", "2.5")
    monkeypatch.setenv("CXR_MAX_PIXELS", "1000000")
    monkeypatch.setenv("CXR_CHEST_BODY_PARTS", "chest, thorax")
    monkeypatch.setenv("CXR_PSEUDONYM_KEY", "site secret of at least thirty-two bytes")

    options = decode_options(load_settings())

    assert options.max_file_bytes == int(2.5 * 1024**2)
    assert options.max_pixels == 1_000_000
    assert options.chest_body_parts == ("CHEST", "THORAX")
    assert options.pseudonym_key == b"site secret of at least thirty-two bytes"
    assert "site secret of at least thirty-two bytes" not in repr(options)


def test_without_a_configured_key_one_is_generated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXR_PSEUDONYM_KEY", raising=False)

    first = decode_options(load_settings()).pseudonym_key
    second = decode_options(load_settings()).pseudonym_key

    key_file = tmp_path / "var" / "pseudonym.key"
    assert key_file.read_bytes() == first == second
    assert len(first) == 32
    assert key_file.stat().st_mode & 0o077 == 0
    assert [p.name for p in key_file.parent.iterdir()] == ["pseudonym.key"]


def test_an_existing_key_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"k" * 32)

    assert load_or_create_key(path) == b"k" * 32


def test_a_truncated_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"short")

    with pytest.raises(ValueError, match="too short for a pseudonym key"):
        load_or_create_key(path)


def test_patient_ref_is_hmac_sha256_of_id_and_issuer() -> None:
    expected = hmac.new(b"key", b"12345^HOSP-A", hashlib.sha256).hexdigest()[:32]

    assert patient_ref(b"key", " 12345 ", "HOSP-A") == expected
    assert patient_ref(b"key", "12345", None) != expected  # another issuer, another patient
    assert patient_ref(b"key", "12345", None) == patient_ref(b"key", "12345", "")
    assert patient_ref(b"key", None, "HOSP-A") is None
    assert patient_ref(b"key", "  ", None) is None


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecodeOptions(max_pixels=0)
    with pytest.raises(ValueError, match="draft_size"):
        DecodeOptions(draft_size=0)
