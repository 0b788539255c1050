"""Password hashes: scrypt (stdlib) with a salt per user, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

# RFC 7914's interactive parameters: about 16 MiB and tens of milliseconds per check.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_SCHEME = "scrypt"
MIN_PASSWORD_CHARS = 12


class PasswordError(ValueError):
    """A password that may not be used; the message says what to choose instead."""


def check_new_password(password: str) -> str:
    """`password` if it may be set; `PasswordError` when it is too short."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordError(
            f"the password is {len(password)} characters; choose one of at least "
            f"{MIN_PASSWORD_CHARS} (a few words is easiest to type)"
        )
    return password


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$<salt hex>$<key hex>` of `password` under a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` is the one `stored` was made from.

    Without a usable `stored` hash (an unknown user, the shared account) a hash is still
    computed, so that a wrong name takes as long to refuse as a wrong password.
    """
    parsed = _parse(stored) if stored else None
    if parsed is None:
        _derive(password, _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    n, r, p, salt, key = parsed
    return hmac.compare_digest(_derive(password, salt, n, r, p), key)


_DUMMY_SALT = bytes(_SALT_BYTES)


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024**2, dklen=_KEY_BYTES
    )


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return None
    # A hash edited to huge parameters must not tie up the server.
    if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16) or len(key) != _KEY_BYTES:
        return None
    return n, r, p, salt, key
