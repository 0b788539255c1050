"""C-ECHO SCU: does a DICOM node answer this node, and would it take the given SOP classes?"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from worker.pacs.aet import Destination

SUCCESS = 0x0000
_SERVICE_USER = 1
_CALLING_AE_NOT_RECOGNISED = 3
_CALLED_AE_NOT_RECOGNISED = 7
# pynetdicom logs why a TCP connection failed (refused, timed out, unknown host) and
# raises nothing: the reason is taken from its log record.
_TCP_ERROR = "TCP Initialisation Error: "


@dataclass(frozen=True, slots=True)
class EchoOutcome:
    """A destination's answer to a C-ECHO.

    `problem` says what went wrong, as a predicate of the destination ("is not
    reachable (...)"), and `remedy` what to do; both are None when it answered with
    success. `not_accepted` lists the extra SOP classes proposed that it did not
    accept (it answered, but would refuse those).
    """

    destination: Destination
    problem: str | None = None
    remedy: str | None = None
    not_accepted: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        """Whether the destination answered the C-ECHO with success."""
        return self.problem is None

    def __str__(self) -> str:
        if self.problem is None:
            return f"{self.destination} answers C-ECHO"
        return f"{self.destination} {self.problem}; {self.remedy}"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _captured_pynetdicom_log() -> Iterator[_Capture]:
    """pynetdicom's log lines while the block runs, kept from the process's own log.

    The outcome says what they say, in one line; process-wide while it lasts, so meant
    for a command that checks a destination, not for a worker's threads.
    """
    logger = logging.getLogger("pynetdicom")
    capture = _Capture()
    saved = logger.level, logger.propagate
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def echo(
    destination: Destination,
    *,
    calling_ae_title: str,
    timeout: float,
    sop_classes: Sequence[str] = (),
) -> EchoOutcome:
    """Open an association with `destination` as `calling_ae_title` and send a C-ECHO.

    `sop_classes` are proposed beside Verification, so that the outcome also says
    whether the destination would accept them (Comprehensive SR Storage for reports).
    `timeout` bounds the connection, the association and the answer, each. Never raises
    for what the network or the destination does: the outcome says it.
    """
    ae = AE(ae_title=calling_ae_title)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    seen = _Seen()
    handlers: list[EventHandlerType] = [
        (evt.EVT_CONN_OPEN, seen.on_open),
        (evt.EVT_PDU_RECV, seen.on_pdu),
    ]
    with _captured_pynetdicom_log() as log:
        try:
            assoc = ae.associate(
                destination.host,
                destination.port,
                ae_title=destination.ae_title,
                evt_handlers=handlers,
            )
        except OSError as exc:  # pynetdicom resolves the host name first, and raises
            return EchoOutcome(
                destination,
                f"is not reachable: host name {destination.host!r} does not resolve "
                f"({exc.strerror or exc})",
                "check the host name in CXR_REPORT_DESTINATION and this host's DNS",
            )
        if not assoc.is_established:
            seen.tcp_errors = [
                m.removeprefix(_TCP_ERROR) for m in log.messages if m.startswith(_TCP_ERROR)
            ]
            return _not_established(seen, destination, calling_ae_title, timeout)
        try:
            return _echo_on(assoc, destination, timeout, sop_classes)
        finally:
            if assoc.is_established:
                assoc.release()


@dataclass(slots=True)
class _Seen:
    """What happened on the wire while the association was requested."""

    connected: bool = False
    rejection: A_ASSOCIATE_RJ | None = None
    aborted: bool = False
    tcp_errors: list[str] = field(default_factory=list)

    def on_open(self, _event: Event) -> None:
        self.connected = True

    def on_pdu(self, event: Event) -> None:
        # The PDU itself, not the association's state: when the peer closes the
        # connection right after its A-ASSOCIATE-RJ, pynetdicom may report the
        # association as aborted rather than rejected (about 1 in 60 against Orthanc).
        pdu = event.pdu
        if isinstance(pdu, A_ASSOCIATE_RJ):
            self.rejection = pdu
        elif isinstance(pdu, A_ABORT_RQ):
            self.aborted = True


def _not_established(
    seen: _Seen, destination: Destination, calling_ae_title: str, timeout: float
) -> EchoOutcome:
    where = f"{destination.host}:{destination.port}"
    if not seen.connected:
        reason = seen.tcp_errors[-1] if seen.tcp_errors else "no connection"
        return EchoOutcome(
            destination,
            f"is not reachable ({reason})",
            f"check that the PACS is running and reachable at {where}, and that "
            "CXR_REPORT_DESTINATION has the right host and port",
        )
    answer = seen.rejection
    if answer is not None:
        return EchoOutcome(
            destination,
            f"refused the association ({answer.result_str}, "
            f"{answer.source_str}: {answer.reason_str})",
            _rejection_remedy(
                answer.source, answer.reason_diagnostic, destination, calling_ae_title
            ),
        )
    if seen.aborted:
        return EchoOutcome(
            destination,
            "aborted the association request",
            "check the PACS's logs for why (some abort for an AE title they do not know)",
        )
    return EchoOutcome(
        destination,
        "took the connection but did not answer the association request "
        f"within {timeout:g} s (or closed the connection)",
        "check that it is a DICOM node without TLS, and raise CXR_DICOM_TIMEOUT_S if it "
        "is only slow",
    )


def _rejection_remedy(
    source: object, diagnostic: object, destination: Destination, calling_ae_title: str
) -> str:
    # PS3.8 9.3.4: source 1 (service user), reasons 3 and 7 name the AE title at fault.
    if source == _SERVICE_USER and diagnostic == _CALLING_AE_NOT_RECOGNISED:
        return (
            f"add this node's AE title {calling_ae_title!r} (CXR_DICOM_AE_TITLE) to the "
            "destination's known nodes, or set CXR_DICOM_AE_TITLE to the title it knows"
        )
    if source == _SERVICE_USER and diagnostic == _CALLED_AE_NOT_RECOGNISED:
        return (
            f"the node at {destination.host}:{destination.port} is not "
            f"{destination.ae_title!r}: put its own AE title in CXR_REPORT_DESTINATION"
        )
    return (
        f"check that the destination knows this node's AE title {calling_ae_title!r} "
        f"(CXR_DICOM_AE_TITLE), that {destination.ae_title!r} is its own AE title "
        "(CXR_REPORT_DESTINATION), and its logs for why it refused"
    )


def _echo_on(
    assoc: Association, destination: Destination, timeout: float, sop_classes: Sequence[str]
) -> EchoOutcome:
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    if str(Verification) not in accepted:
        return EchoOutcome(
            destination,
            "accepted the association but not the Verification SOP class (C-ECHO)",
            "allow C-ECHO (SOP class 1.2.840.10008.1.1) for this node in the PACS",
        )
    status = assoc.send_c_echo()
    if "Status" not in status:
        return EchoOutcome(
            destination,
            f"did not answer the C-ECHO within {timeout:g} s (or the association dropped)",
            "check the PACS's logs, and raise CXR_DICOM_TIMEOUT_S if it is only slow",
        )
    code = int(status.Status)
    if code != SUCCESS:
        comment = str(status.get("ErrorComment", "")).strip()
        return EchoOutcome(
            destination,
            f"answered the C-ECHO with status 0x{code:04X}"
            + (f" ({comment})" if comment else "")
            + ", not success",
            "check the PACS's logs for why it refuses C-ECHO from this node",
        )
    return EchoOutcome(
        destination, not_accepted=tuple(uid for uid in sop_classes if uid not in accepted)
    )
