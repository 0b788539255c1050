"""Password hashes, signed session cookies and the cookie key under var/."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from cxr_screen.web.passwords import (
    PasswordError,
    check_new_password,
    hash_password,
    verify_password,
)
from cxr_screen.web.session_key import KEY_FILE_NAME, SessionKeyError, session_key
from cxr_screen.web.sessions import MAX_AGE_S, WebSession, decode, encode
from worker.settings import SettingsError, load_settings

KEY = b"k" * 32


def test_a_password_verifies_against_its_salted_scrypt_hash() -> None:
    stored = hash_password("a long enough password")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("a long enough password", stored)
    assert not verify_password("a long enough passworD", stored)
    assert hash_password("a long enough password") != stored  # a salt per hash


@pytest.mark.parametrize(
    "stored", [None, "", "plain", "scrypt$16384$8$1$zz$zz", "scrypt$1073741824$8$1$00$" + "0" * 64,
               "bcrypt$x"],
)  # fmt: skip
def test_no_password_matches_a_missing_or_malformed_hash(stored: str | None) -> None:
    assert not verify_password("anything at all", stored)


def test_a_short_password_is_refused_with_the_length_to_choose() -> None:
    with pytest.raises(PasswordError, match="at least 12"):
        check_new_password("short")
    assert check_new_password("twelve chars") == "twelve chars"


def test_a_session_round_trips_and_a_forged_or_old_one_does_not() -> None:
    session = WebSession.fresh(7)
    value = encode(session, KEY)
    assert decode(value, KEY) == session
    assert decode(value, b"x" * 32) is None
    body, signature = value.split(".")
    assert decode(f"{body}x.{signature}", KEY) is None
    assert decode("not a cookie", KEY) is None
    assert decode(value, KEY, now=time.time() + MAX_AGE_S + 5) is None


def test_an_anonymous_session_carries_only_a_form_token() -> None:
    session = WebSession.fresh()
    assert session.user_id is None
    assert len(session.csrf) >= 40
    assert decode(encode(session, KEY), KEY) == session


def test_the_cookie_key_is_made_once_under_var_and_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CXR_WEB_SECRET", raising=False)
    settings = load_settings()
    first = session_key(settings)
    path = tmp_path / "var" / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_key(settings) == first
    assert len(first) == 32


def test_cxr_web_secret_is_the_key_and_a_short_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert session_key(load_settings(web_secret="s" * 40)) == b"s" * 40
    assert not (tmp_path / "var").exists()
    with pytest.raises(SettingsError, match="CXR_WEB_SECRET: the key is 5 bytes"):
        load_settings(web_secret="short")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / KEY_FILE_NAME).write_bytes(b"tiny")
    with pytest.raises(SessionKeyError, match="holds 4 bytes"):
        session_key(load_settings())


def test_web_settings_default_to_this_host_and_check_the_shared_password() -> None:
    settings = load_settings()
    assert settings.web.web_host == "127.0.0.1"
    assert settings.web.web_port == 8080
    with pytest.raises(SettingsError, match="CXR_WEB_PASSWORD: the password is 3 characters"):
        load_settings(web_password="abc")
    with pytest.raises(SettingsError, match="CXR_WEB_PORT"):
        load_settings(web_port=0)
