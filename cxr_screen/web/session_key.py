"""The key that signs session cookies: CXR_WEB_SECRET, or one generated under var/."""

from __future__ import annotations

from pathlib import Path

from worker.imaging.pseudonym import write_new_key
from worker.settings import Settings

KEY_FILE_NAME = "web-session.key"
KEY_BYTES = 32


class SessionKeyError(ValueError):
    """The key file cannot be used; the message says how to fix it."""


def session_key(settings: Settings) -> bytes:
    """CXR_WEB_SECRET's bytes, or the key in ``var/web-session.key`` (made on first use).

    The file is written private (0600) under a temporary name and hard-linked into place,
    so two servers starting at once end up with the same key.

    Raises:
        SessionKeyError: the key file is shorter than 32 bytes or cannot be read.
    """
    if settings.web.web_secret is not None:
        return settings.web.web_secret.get_secret_value().encode("utf-8")
    path = settings.storage.var_dir / KEY_FILE_NAME
    if not path.exists():
        _create(path)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise SessionKeyError(
            f"cannot read the session key {path}: {exc.strerror}; make it readable by the "
            "service's user, or set CXR_WEB_SECRET"
        ) from None
    if len(key) < KEY_BYTES:
        raise SessionKeyError(
            f"{path} holds {len(key)} bytes, too short for a session key (at least "
            f"{KEY_BYTES}); delete it to generate a new one (everyone is signed out) or set "
            "CXR_WEB_SECRET"
        )
    return key


def _create(path: Path) -> None:
    write_new_key(path, KEY_BYTES)  # another server may have made it first: theirs stands
