"""Times typed on the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.cli.when import parse_when

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("90m", NOW - timedelta(minutes=90)),
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
        ("2026-11-29T08:30", datetime(2026, 11, 29, 8, 30, tzinfo=UTC)),
        ("2026-11-29T08:30+01:00", datetime(2026, 11, 29, 7, 30, tzinfo=UTC)),
    ],
)
def test_accepted_forms(text: str, expected: datetime) -> None:
    assert parse_when(text, now=NOW) == expected


def test_nonsense_lists_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"'yesterday' is not a time: use 2026-11-29"):
        parse_when("yesterday", now=NOW)
