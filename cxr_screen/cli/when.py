"""Parse the times people type: ISO 8601 dates and times, or an age such as `24h` or `7d`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# ASCII digits only: `\d` would also take other scripts' digits.
_AGE = re.compile(r"^([0-9]+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FORMS = "2026-11-29, 2026-11-29T08:30 (UTC), 2026-11-29T08:30+01:00, or an age such as 24h, 7d"


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """Turn `text` into an aware UTC datetime.

    `2026-11-29`, `2026-11-29T08:30` (UTC when no offset is given, so results are the
    same whichever machine runs the query), `2026-11-29T08:30+01:00`, or an age before
    now: `90m`, `24h`, `7d`, `2w`.

    Raises:
        ValueError: with the accepted forms, when `text` is none of them or names a
            time outside the calendar (before the year 1 or after 9999 in UTC).
    """
    now = now or datetime.now(UTC)
    age = _AGE.match(text.strip().lower())
    if age:
        try:
            return now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
        # OverflowError: past the year 1; ValueError: more digits than int() reads.
        except (OverflowError, ValueError):
            raise ValueError(
                f"{_shown(text)} reaches before the year 1: give an age of at most a few "
                "thousand years, such as 24h, 7d or 520w"
            ) from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{_shown(text)} is not a time: use {_FORMS}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is in the year 0 in UTC.
        raise ValueError(
            f"{_shown(text)} is outside the calendar in UTC (years 1 to 9999): use {_FORMS}"
        ) from None


def _shown(text: str) -> str:
    """`text` quoted for a message, cut short: a typed value may be thousands of digits."""
    return repr(text) if len(text) <= 40 else f"{text[:30]!r}... ({len(text)} characters)"
