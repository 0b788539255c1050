"""PACS errors: one hierarchy; each message says what went wrong and what to do."""

from __future__ import annotations


class PacsError(Exception):
    """A DICOM networking or reporting problem.

    Messages name the thing (a scan id, a SOP Instance UID, a destination) and never
    the patient.
    """

    def __init__(self, problem: str, remedy: str) -> None:
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"{problem}; {remedy}")

    def __reduce__(self) -> tuple[type[PacsError], tuple[str, str]]:
        # Celery pickles exceptions between processes; keep both parts.
        return (type(self), (self.problem, self.remedy))


class ReportBuildError(PacsError):
    """A scan's report cannot be built (its archived image or its prediction is unusable).

    Permanent: retrying does not help, so the report is marked failed at once.
    """


class DeliveryError(PacsError):
    """The destination could not be reached or did not store the report. Retried."""


class ReceiverError(PacsError):
    """The DICOM receiver cannot start (port in use, no allowed AE titles)."""
