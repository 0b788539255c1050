"""The results filters from a query string: the same as `cxr-screen results`' options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from cxr_screen.cli.when import parse_when
from db.models import ScanStatus
from db.results import ResultFilter

PAGE_SIZE = 50
MAX_PAGE = 100_000
FIELDS = ("since", "until", "status", "label", "min_probability", "model_version")


class FilterError(ValueError):
    """A filter value that is not understood; the message says what is expected."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters as typed (for the form and links) and as a query (`ResultFilter`)."""

    typed: dict[str, str]
    query: ResultFilter
    page: int

    def link(self, **changes: str | int) -> str:
        """The query string of these filters with `changes` (page numbers, a status)."""
        values: dict[str, str | int] = {k: v for k, v in self.typed.items() if v}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def parse_filters(params: dict[str, str]) -> Filters:
    """Turn the query string into filters; `FilterError` names the field and the fix."""
    typed = {name: params.get(name, "").strip()[:200] for name in FIELDS}
    status = None
    if typed["status"]:
        try:
            status = ScanStatus(typed["status"])
        except ValueError:
            choices = ", ".join(s.value for s in ScanStatus)
            raise FilterError(f"status: choose one of {choices}") from None
    probability = None
    if typed["min_probability"]:
        try:
            probability = float(typed["min_probability"])
        except ValueError:
            probability = math.nan
        if not 0.0 <= probability <= 1.0:
            raise FilterError("minimum probability: give a number from 0 to 1, such as 0.5")
    try:
        page = int(params.get("page") or 1)
    except ValueError:
        page = 0
    if not 1 <= page <= MAX_PAGE:
        raise FilterError(f"page: give a number from 1 to {MAX_PAGE}")
    query = ResultFilter(
        since=_when(typed["since"], "since"),
        until=_when(typed["until"], "until"),
        status=status,
        label=typed["label"] or None,
        min_probability=probability,
        model_version=typed["model_version"] or None,
        limit=PAGE_SIZE + 1,  # one more: is there a next page?
        offset=(page - 1) * PAGE_SIZE,
    )
    return Filters(typed, query, page)


def _when(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_when(text)
    except ValueError as exc:
        raise FilterError(f"{name}: {exc}") from None
