"""Times typed on the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cxr_screen.cli.when import parse_when

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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999d", "reaches before the year 1"),
        ("200000w", "reaches before the year 1"),
        ("9" * 5000 + "s", r"\(5001 characters\) reaches before the year 1"),
        ("0001-01-01T00:00+01:00", "outside the calendar in UTC"),
        ("9999-12-31T23:59-01:00", "outside the calendar in UTC"),
        ("-5d", "is not a time"),
        ("\u0661\u0662d", "is not a time"),  # Arabic-Indic digits: not an age
    ],
)
def test_times_outside_the_calendar_are_value_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_when(text, now=NOW)


def test_the_edges_of_the_calendar_are_accepted() -> None:
    assert parse_when("0001-01-01T00:00", now=NOW) == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_when("9999-12-31T23:59+00:00", now=NOW).year == 9999
    assert parse_when("2000w", now=NOW).year < 1990
