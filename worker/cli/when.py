"""Parse the times people type: ISO 8601 dates and times, or an age such as `24h` or `7d`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """Turn `text` into an aware UTC datetime.

    `2026-11-29`, `2026-11-29T08:30` (UTC when no offset is given, so results are the
    same whichever machine runs the query), `2026-11-29T08:30+01:00`, or an age before
    now: `90m`, `24h`, `7d`, `2w`.

    Raises:
        ValueError: with the accepted forms, when `text` is none of them.
    """
    now = now or datetime.now(UTC)
    age = _AGE.match(text.strip().lower())
    if age:
        try:
            return now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
        except OverflowError:
            raise ValueError(
                f"{text!r} reaches before the year 1: give an age of at most a few "
                "thousand years, such as 24h, 7d or 520w"
            ) from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 2026-11-29, 2026-11-29T08:30 (UTC), "
            "2026-11-29T08:30+01:00, or an age such as 90m, 24h, 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
