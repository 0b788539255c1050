"""Pseudonymous patient references: a keyed hash of the Patient ID, never the name."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE_NAME = "pseudonym.key"
# Shorter HMAC keys can be guessed: the same floor as CXR_PSEUDONYM_KEY (settings).
KEY_BYTES = 32
REF_HEX_CHARS = 32


class PseudonymKeyError(ValueError):
    """The key file cannot be used (too short, unreadable); the message says how to fix it."""


def patient_ref(key: bytes, patient_id: str | None, issuer: str | None) -> str | None:
    """HMAC-SHA256 of ``PatientID^IssuerOfPatientID`` as 32 hex characters.

    The issuer is part of the message because the same Patient ID from two hospitals
    is two patients. Returns None when there is no Patient ID.
    """
    if patient_id is None or not patient_id.strip():
        return None
    message = f"{patient_id.strip()}^{(issuer or '').strip()}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:REF_HEX_CHARS]


def load_or_create_key(path: Path) -> bytes:
    """Read the pseudonym key at `path`, creating a random one on first use.

    Several workers may start at once: the key is written to a private (0600) temporary
    file and hard-linked into place, which fails if another process won the race, so
    every process ends up with the same key.

    Raises:
        PseudonymKeyError: the file exists but is shorter than `KEY_BYTES` or unreadable.
    """
    if path.exists():
        return _read_key(path)
    write_new_key(path, KEY_BYTES)
    return _read_key(path)


def write_new_key(path: Path, size: int) -> None:
    """Create `path` holding `size` random bytes, readable by its owner only (0600),
    unless another process created it first (then theirs stands): written to a private
    temporary file and hard-linked into place, which fails if the name exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(size))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise PseudonymKeyError(
            f"cannot read the pseudonym key {path}: {exc.strerror}; make it readable by the "
            "service's user, or set CXR_PSEUDONYM_KEY"
        ) from None
    if len(key) < KEY_BYTES:
        raise PseudonymKeyError(
            f"{path} holds {len(key)} bytes, too short for a pseudonym key (at least "
            f"{KEY_BYTES}); delete it to generate a new one (patient references will change) "
            "or set CXR_PSEUDONYM_KEY"
        )
    return key
