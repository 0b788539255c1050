"""The decoder options a site configured: `DecodeOptions` built from `Settings`."""

from __future__ import annotations

import logging
import secrets

from worker.imaging.options import DecodeOptions
from worker.imaging.pseudonym import KEY_BYTES, KEY_FILE_NAME, load_or_create_key
from worker.settings import Settings

log = logging.getLogger(__name__)


def decode_options(settings: Settings, *, create_key: bool = True) -> DecodeOptions:
    """The decoder options a site configured (CXR_MAX_FILE_MB, CXR_MAX_PIXELS, ...).

    Without CXR_PSEUDONYM_KEY the key is read from (or on first use written to)
    ``var/pseudonym.key``, so patient references stay stable across restarts. With
    `create_key` false (a look at files, `cxr-screen inspect`) no key file is ever
    written: without one, a throw-away key is used and the log says so.

    Raises:
        PseudonymKeyError: the key file is shorter than 32 bytes or cannot be read.
    """
    if settings.decoder.pseudonym_key is not None:
        key = settings.decoder.pseudonym_key.get_secret_value().encode("utf-8")
    elif create_key or (settings.storage.var_dir / KEY_FILE_NAME).exists():
        key = load_or_create_key(settings.storage.var_dir / KEY_FILE_NAME)
    else:
        log.warning(
            "no pseudonym key here (CXR_PSEUDONYM_KEY unset, no %s): patient references "
            "below use a throw-away key and differ from the service's",
            settings.storage.var_dir / KEY_FILE_NAME,
        )
        key = secrets.token_bytes(KEY_BYTES)
    return DecodeOptions(
        max_file_bytes=int(settings.decoder.max_file_mb * 1024**2),
        max_pixels=settings.decoder.max_pixels,
        chest_body_parts=tuple(settings.decoder.chest_body_parts),
        pseudonym_key=key,
    )
