"""Signed session cookies: who is signed in and the form token, HMAC-SHA256 over JSON."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE_NAME = "cxr_session"
# A session ends this long after sign-in, whatever happens in between.
MAX_AGE_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class WebSession:
    """One browser's session: the signed-in user (None before sign-in) and its form token."""

    user_id: int | None
    csrf: str
    issued_at: int

    @classmethod
    def fresh(cls, user_id: int | None = None) -> WebSession:
        """A new session with a new form token (at sign-in, so no token outlives it)."""
        return cls(user_id, secrets.token_urlsafe(32), int(time.time()))


def encode(session: WebSession, key: bytes) -> str:
    """The cookie value: base64url(JSON) `.` base64url(HMAC)."""
    payload = json.dumps(
        {"u": session.user_id, "c": session.csrf, "t": session.issued_at}, separators=(",", ":")
    ).encode()
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{body}.{_sign(body, key)}"


def decode(value: str | None, key: bytes, *, now: float | None = None) -> WebSession | None:
    """The session in a cookie value, or None when absent, forged, malformed or expired."""
    if not value or value.count(".") != 1:
        return None
    body, signature = value.split(".")
    if not hmac.compare_digest(signature, _sign(body, key)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        user_id, csrf, issued_at = data["u"], data["c"], int(data["t"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    if not isinstance(csrf, str) or not (user_id is None or isinstance(user_id, int)):
        return None
    moment = time.time() if now is None else now
    if not issued_at <= moment + 60 or moment - issued_at > MAX_AGE_S:
        return None
    return WebSession(user_id, csrf, issued_at)


def _sign(body: str, key: bytes) -> str:
    digest = hmac.new(key, b"cxr-session:" + body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
