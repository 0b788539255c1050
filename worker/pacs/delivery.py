"""C-STORE SCU: send Structured Reports to the destination AE over one association."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ComprehensiveSRStorage  # type: ignore[attr-defined]

from worker.pacs.aet import Destination
from worker.pacs.errors import DeliveryError

log = logging.getLogger(__name__)

# C-STORE statuses that mean "stored" (PS3.4 B.2.3): success, and the warnings for
# coercion of data elements, elements that do not match the SOP class, and elements
# discarded. Anything else means the report is not in the PACS.
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


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
    ae.add_requested_context(
        ComprehensiveSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    )
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


def store_reports(
    reports: Sequence[Dataset],
    *,
    destination: Destination,
    calling_ae_title: str,
    timeout: float,
) -> list[StoreOutcome]:
    """C-STORE each report over one association; one outcome per report, in order.

    Raises:
        DeliveryError: No association (the destination is down, unreachable or refuses
            this node), or it accepted no context for Comprehensive SR.
    """
    if not reports:
        return []
    ae = _application_entity(calling_ae_title, timeout)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise _refusal(assoc, destination)
    outcomes: list[StoreOutcome] = []
    try:
        if not any(cx.abstract_syntax == ComprehensiveSRStorage for cx in assoc.accepted_contexts):
            raise DeliveryError(
                f"{destination} does not accept Comprehensive SR Storage",
                "allow SOP class 1.2.840.10008.5.1.4.1.1.88.33 for this node in the PACS",
            )
        for report in reports:
            if not assoc.is_established:
                outcomes.append(StoreOutcome(False, "the association was lost"))
                continue
            outcome = _describe(assoc.send_c_store(report))
            log.debug("C-STORE of report %s: %s", report.SOPInstanceUID, outcome.detail)
            outcomes.append(outcome)
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes
