"""DICOM TLS (PS3.15 B.1) for the receiver: a server-side SSLContext from the settings."""

from __future__ import annotations

import ssl
from pathlib import Path

from worker.pacs.errors import ReceiverError


def server_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """TLS 1.2 or later with `cert` and `key`; with `ca`, senders need a certificate it signed.

    Raises:
        ReceiverError: the files cannot be loaded (wrong format, key not matching).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
        if ca is not None:
            context.load_verify_locations(cafile=ca)
            context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the sender proves itself
    except (ssl.SSLError, OSError) as exc:
        raise ReceiverError(
            f"cannot load the DICOM TLS certificate, key or CA ({exc})",
            "give PEM files in CXR_DICOM_TLS_CERT, CXR_DICOM_TLS_KEY and CXR_DICOM_TLS_CA, "
            "the key matching the certificate",
        ) from None
    return context
