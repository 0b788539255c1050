"""C-STORE SCP: receive radiographs from a PACS or modality into the inbox, atomically."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from worker.pacs.aet import is_uid
from worker.pacs.errors import ReceiverError
from worker.pacs.files import publish_new
from worker.pacs.tls import server_context
from worker.settings import Settings

log = logging.getLogger(__name__)

# What the screening worker decodes: chest radiographs (CR, DX) and Secondary Capture
# (digitised films, challenge data sets). Other SOP classes are refused at association,
# so a sender learns at once that cxr-screen is the wrong destination for them.
RADIOGRAPH_STORAGE = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)
# Every transfer syntax the decoder reads (pydicom with pylibjpeg): uncompressed,
# deflated, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000 and RLE. Files are kept
# as sent, never transcoded here. When a sender offers several syntaxes in one
# presentation context, pynetdicom takes the first of this list that it offers: lossless
# compressed first (the sender's own bytes, smaller), then uncompressed, and lossy last,
# so that a sender holding uncompressed pixels is never asked to compress them lossily.
TRANSFER_SYNTAXES = (
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    RLELossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused: Out of Resources
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3: Error: Cannot understand
ANY_AE = "*"


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """How the DICOM receiver listens and where it writes.

    `allowed_aes` lists the calling AE titles that may associate; `("*",)` allows any.
    """

    ae_title: str
    bind_address: str
    port: int
    allowed_aes: tuple[str, ...]
    inbox: Path
    timeout: float
    max_instance_bytes: int = 512 * 1024**2
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ReceiverConfig:
        """The receiver these (validated) settings describe, its TLS context loaded.

        Raises:
            ReceiverError: the TLS certificate, key or CA cannot be loaded.
        """
        pacs = settings.pacs
        context = None
        if pacs.dicom_tls_cert is not None and pacs.dicom_tls_key is not None:
            context = server_context(pacs.dicom_tls_cert, pacs.dicom_tls_key, pacs.dicom_tls_ca)
        return cls(
            ae_title=pacs.dicom_ae_title,
            bind_address=pacs.dicom_bind_address,
            port=pacs.dicom_port,
            allowed_aes=pacs.dicom_allowed_aes,
            inbox=settings.storage.inbox,
            timeout=pacs.dicom_timeout_s,
            max_instance_bytes=int(settings.decoder.max_file_mb * 1024**2),
            ssl_context=context,
        )


def _failure(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO
    return status


def inbox_path(inbox: Path, *, study_uid: str, sop_uid: str) -> Path:
    """`inbox/<Study Instance UID>/<SOP Instance UID>.dcm`: where an instance goes first.

    A second instance with the same UIDs is kept beside it (see `publish_new`).
    """
    return inbox / study_uid / f"{sop_uid}.dcm"


class InstanceSizeGuard:
    """Abort an association whose current instance passes the size cap while it arrives.

    pynetdicom gathers a whole C-STORE data set in memory before the handler sees it;
    counting the P-DATA bytes as they come (EVT_DATA_RECV, one event per PDU, in the
    association's reader thread) keeps a sender from filling memory with one endless
    instance: at most the cap and one PDU are held. The count restarts after each
    stored instance.
    """

    # Room for the command set and the PDU headers around the data set.
    SLACK_BYTES = 64 * 1024

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._received: dict[int, int] = {}
        self._aborted: set[int] = set()
        self._lock = threading.Lock()

    def on_data(self, event: Event) -> None:
        """EVT_DATA_RECV: add the bytes; abort once the instance is over the cap."""
        key = id(event.assoc)
        with self._lock:
            total = self._received.get(key, 0) + len(event.data)
            self._received[key] = total
            first = total > self.limit + self.SLACK_BYTES and key not in self._aborted
            if first:
                # The reader goes on draining what the sender had already sent: one
                # abort and one log line per association, not one per PDU.
                self._aborted.add(key)
        if first:
            log.warning(
                "aborting the association from %s: an instance passed the size cap of "
                "%s MB (CXR_MAX_FILE_MB)",
                event.assoc.requestor.ae_title,
                _megabytes(self.limit),
            )
            event.assoc.abort()

    def reset(self, event: Event) -> None:
        """Start counting the next instance (EVT_C_STORE)."""
        with self._lock:
            self._received.pop(id(event.assoc), None)

    def forget(self, event: Event) -> None:
        """EVT_CONN_CLOSE: drop what is known of a closed association."""
        with self._lock:
            self._received.pop(id(event.assoc), None)
            self._aborted.discard(id(event.assoc))


def _megabytes(size: int) -> str:
    return f"{size / 1024**2:.3g}"


def handle_store(
    event: Event, inbox: Path, guard: InstanceSizeGuard | None = None
) -> int | Dataset:
    """Write one received instance into the inbox as sent (no decode, no re-encode)."""
    request = cast(C_STORE, event.request)  # this handler is bound to EVT_C_STORE only
    sop_uid = str(request.AffectedSOPInstanceUID or "")
    calling = event.assoc.requestor.ae_title
    if guard is not None:
        guard.reset(event)
    if not is_uid(sop_uid):
        log.warning("refused an instance from %s: malformed SOP Instance UID", calling)
        return _failure(CANNOT_UNDERSTAND, "malformed Affected SOP Instance UID")
    data = event.encoded_dataset(include_meta=True)
    if guard is not None and len(data) > guard.limit:
        log.warning(
            "refused SOP %s from %s: %d bytes, over the size cap of %s MB (CXR_MAX_FILE_MB)",
            sop_uid,
            calling,
            len(data),
            _megabytes(guard.limit),
        )
        return _failure(OUT_OF_RESOURCES, "instance over the size cap")
    try:
        header = dcmread(
            BytesIO(data),
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SOPInstanceUID"],
        )
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        # The type only: a parser's message may quote a header value.
        log.warning(
            "refused SOP %s from %s: unreadable data set (%s)", sop_uid, calling, type(exc).__name__
        )
        return _failure(CANNOT_UNDERSTAND, "unreadable data set")
    study_uid = header.get("StudyInstanceUID")
    if header.get("SOPInstanceUID") != sop_uid or not is_uid(study_uid):
        # The UIDs become the file's path: only well-formed ones that agree are taken.
        log.warning(
            "refused SOP %s from %s: missing or malformed Study/SOP Instance UID in the data set",
            sop_uid,
            calling,
        )
        return _failure(CANNOT_UNDERSTAND, "missing or malformed Study/SOP Instance UID")
    target = inbox_path(inbox, study_uid=str(study_uid), sop_uid=sop_uid)
    try:
        stored = publish_new(target, data)
    except OSError as exc:
        log.error("could not store SOP %s from %s in %s: %s", sop_uid, calling, inbox, exc)
        return _failure(OUT_OF_RESOURCES, "cannot write to the inbox")
    if stored != target:
        log.warning(
            "received SOP %s from %s again (%d bytes): kept beside the first as %s",
            sop_uid,
            calling,
            len(data),
            stored.name,
        )
    else:
        log.info("received SOP %s from %s (%d bytes)", sop_uid, calling, len(data))
    return SUCCESS


def _log_request(event: Event, allowed: tuple[str, ...]) -> None:
    # The requestor's AE title is filled in only once negotiated: read the request.
    request = event.assoc.requestor.primitive
    calling = str(request.calling_ae_title).strip() if request is not None else "?"
    address = event.assoc.requestor.address
    if ANY_AE in allowed or calling in allowed:
        log.debug("association request from %s at %s", calling, address)
    else:
        log.warning(
            "refusing an association from calling AE %r at %s: not in CXR_DICOM_ALLOWED_AES",
            calling,
            address,
        )


class Receiver:
    """A C-STORE and C-ECHO SCP on a port, serving associations in threads."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        ae = AE(ae_title=config.ae_title)
        for sop_class in RADIOGRAPH_STORAGE:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        # Associations addressed to another AE title, or from a calling AE title not
        # listed, are rejected before any data is sent.
        ae.require_called_aet = True
        if ANY_AE not in config.allowed_aes:
            ae.require_calling_aet = list(config.allowed_aes)
        ae.acse_timeout = config.timeout
        ae.dimse_timeout = config.timeout
        ae.network_timeout = config.timeout
        self._ae = ae
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Listen in background threads; raises ReceiverError when the port is taken."""
        if not self.config.allowed_aes:
            raise ReceiverError(
                "no calling AE title is allowed to send (CXR_DICOM_ALLOWED_AES is empty)",
                "list the AE titles of the PACS and modalities that send, e.g. "
                "CXR_DICOM_ALLOWED_AES=PACS,CR_ROOM1, or * to accept any",
            )
        self.config.inbox.mkdir(parents=True, exist_ok=True)
        address = (self.config.bind_address, self.config.port)
        guard = InstanceSizeGuard(self.config.max_instance_bytes)
        try:
            self._server = self._ae.start_server(
                address,
                block=False,
                ssl_context=self.config.ssl_context,
                evt_handlers=[
                    (evt.EVT_C_STORE, handle_store, [self.config.inbox, guard]),
                    (evt.EVT_DATA_RECV, guard.on_data),
                    (evt.EVT_CONN_CLOSE, guard.forget),
                    (evt.EVT_REQUESTED, _log_request, [self.config.allowed_aes]),
                ],
            )
        except OSError as exc:
            raise ReceiverError(
                f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}",
                "choose a free port with CXR_DICOM_PORT (ports below 1024 need root) "
                "or stop the other program on it",
            ) from None

    def stop(self) -> None:
        """Stop listening; associations in progress are ended."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
