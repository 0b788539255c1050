"""`cxr-screen receive`: a DICOM node (C-STORE SCP) that writes received scans into the inbox."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from cxr_screen.cli.common import CommandError, settings_or_fail
from worker.logs import configure_logging
from worker.pacs import quiet_pynetdicom
from worker.pacs.errors import ReceiverError
from worker.pacs.scp import ANY_AE, Receiver, ReceiverConfig
from worker.settings import Settings

log = logging.getLogger(__name__)


def receive() -> None:
    """Receive scans from a PACS or modality over DICOM (C-STORE) into the inbox.

    Listens as CXR_DICOM_AE_TITLE on CXR_DICOM_BIND_ADDRESS:CXR_DICOM_PORT and accepts
    CR, DX and Secondary Capture images in uncompressed, deflated, JPEG, JPEG-LS, JPEG
    2000 and RLE transfer syntaxes, from the calling AE titles in
    CXR_DICOM_ALLOWED_AES only (others are refused at association). Each instance is
    written as sent to `INBOX/<Study Instance UID>/<SOP Instance UID>.dcm`, complete or
    not at all, and the watcher takes it from there; one sent again with the same UIDs
    is kept beside the first (`<SOP Instance UID>.<sha12>.dcm`), never over it. An
    instance over CXR_MAX_FILE_MB is refused. With CXR_DICOM_TLS_CERT and
    CXR_DICOM_TLS_KEY it speaks DICOM TLS only (and CXR_DICOM_TLS_CA requires client
    certificates). Answers C-ECHO. Stop with Ctrl-C or SIGTERM.
    """
    settings = settings_or_fail()
    configure_logging(settings.log_level)
    quiet_pynetdicom(settings.log_level)
    try:
        config = ReceiverConfig.from_settings(settings)
    except ReceiverError as exc:
        raise CommandError(str(exc)) from None
    receiver = Receiver(config)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        receiver.start()
    except (ReceiverError, OSError) as exc:
        raise CommandError(str(exc)) from None
    allowed = "any" if ANY_AE in config.allowed_aes else ", ".join(config.allowed_aes)
    log.info(
        "receiving DICOM as %s on %s:%d into %s (calling AE titles allowed: %s; %s)",
        config.ae_title,
        config.bind_address,
        config.port,
        config.inbox.resolve(),
        allowed,
        _tls_mode(settings),
    )
    try:
        # Signal handlers run in this thread between waits; the server's threads serve.
        while not stop.wait(0.5):
            pass
    finally:
        log.info("DICOM receiver stopping")
        receiver.stop()


def _tls_mode(settings: Settings) -> str:
    if settings.pacs.dicom_tls_cert is None:
        return "plain TCP: the AE title is not authentication, see README Security"
    if settings.pacs.dicom_tls_ca is None:
        return "TLS"
    return "TLS, client certificates required"
