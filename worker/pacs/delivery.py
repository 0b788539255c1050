"""C-STORE SCU: send result instances (report SRs, heatmap SCs) over one association."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComprehensiveSRStorage,
    SecondaryCaptureImageStorage,
)

from worker.pacs.aet import Destination
from worker.pacs.errors import DeliveryError

log = logging.getLogger(__name__)

# C-STORE statuses that mean "stored" (PS3.4 B.2.3): success, and the warnings for
# coercion of data elements, elements that do not match the SOP class, and elements
# discarded. Anything else means the report is not in the PACS.
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
# The SOP classes cxr-screen sends (the report, the heatmap), as a PACS names them.
SENT_SOP_CLASSES = {
    str(ComprehensiveSRStorage): "Comprehensive SR Storage",
    str(SecondaryCaptureImageStorage): "Secondary Capture Image Storage",
}


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """The destination's answer to one C-STORE."""

    stored: bool
    detail: str


def _application_entity(calling_ae_title: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae_title)
    # One bound for every phase: a PACS that does not answer must not hold the worker
    # (the sender runs between screening batches).
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    for sop_class in SENT_SOP_CLASSES:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def _refusal(assoc: Association, destination: Destination) -> DeliveryError:
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        return DeliveryError(
            f"{destination} rejected the association ({answer.result_str}, "
            f"{answer.source_str}: {answer.reason_str})",
            "check that the destination knows this node's AE title (CXR_DICOM_AE_TITLE) "
            "and that CXR_REPORT_DESTINATION names its AE title",
        )
    return DeliveryError(
        f"could not open an association with {destination} (no answer, refused or aborted)",
        "check that the PACS is running and reachable at that host and port",
    )


def _describe(status: Dataset) -> StoreOutcome:
    if "Status" not in status:
        # pynetdicom hands back an empty dataset when the peer did not answer in time
        # or the association dropped.
        return StoreOutcome(False, "no answer to the C-STORE (timeout or connection lost)")
    code = int(status.Status)
    comment = str(status.get("ErrorComment", "")).strip()
    detail = f"status 0x{code:04X}" + (f" ({comment})" if comment else "")
    return StoreOutcome(code in STORED_STATUSES, detail)


def _not_accepted(sop_class: str, destination: Destination) -> StoreOutcome:
    name = SENT_SOP_CLASSES.get(sop_class)
    if name is None:
        return StoreOutcome(
            False,
            f"SOP class {sop_class or '(none)'} is not one cxr-screen sends "
            f"({', '.join(SENT_SOP_CLASSES.values())})",
        )
    return StoreOutcome(
        False,
        f"{destination} does not accept {name}; "
        f"allow SOP class {sop_class} for this node in the PACS",
    )


def store_reports(
    reports: Sequence[Dataset],
    *,
    destination: Destination,
    calling_ae_title: str,
    timeout: float,
) -> list[StoreOutcome]:
    """C-STORE each instance over one association; one outcome per instance, in order.

    The instances may mix report SRs and heatmap SCs: each goes on the context the
    destination accepted for its SOP Class UID. One whose class the destination did not
    accept is not stored, and its outcome names the SOP class to allow.

    Raises:
        DeliveryError: No association (the destination is down, unreachable or refuses
            this node).
    """
    if not reports:
        return []
    ae = _application_entity(calling_ae_title, timeout)
    try:
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    except OSError as exc:
        # pynetdicom raises (rather than returning an unestablished association) when
        # the host name does not resolve: an outage like any other, retried with backoff.
        raise DeliveryError(
            f"could not reach {destination} ({type(exc).__name__}: {exc})",
            "check CXR_REPORT_DESTINATION's host name and this node's DNS",
        ) from None
    if not assoc.is_established:
        raise _refusal(assoc, destination)
    outcomes: list[StoreOutcome] = []
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        for report in reports:
            sop_class = str(report.get("SOPClassUID", ""))
            if sop_class not in accepted or sop_class not in SENT_SOP_CLASSES:
                outcome = _not_accepted(sop_class, destination)
            elif not assoc.is_established:
                outcome = StoreOutcome(False, "the association was lost")
            else:
                outcome = _describe(assoc.send_c_store(report))
            log.debug("C-STORE of %s: %s", report.get("SOPInstanceUID", "?"), outcome.detail)
            outcomes.append(outcome)
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes
