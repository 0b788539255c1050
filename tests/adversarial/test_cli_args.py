"""Item 8: absurd option values are usage errors naming the option, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_runner import run_cli

KEY = "adversarial-test-pseudonym-key-0123"


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated SQLite database: each refusal must come before or without a query."""
    folder = tmp_path_factory.mktemp("cli-args")
    env = {"CXR_DATABASE_URL": f"sqlite:///{folder / 'db.sqlite'}", "CXR_PSEUDONYM_KEY": KEY}
    out = run_cli("db", "upgrade", cwd=folder, env=env)
    assert out.returncode == 0, out.stderr
    return env


@pytest.mark.parametrize(
    ("args", "accepted"),
    [
        # Ages past the year 1, in every unit, and more digits than int() reads.
        (["--since", "99999999999d"], "at most a few thousand years"),
        (["--since", "999999999d"], "at most a few thousand years"),
        (["--since", "99999999999999999999999999999999s"], "at most a few thousand years"),
        (["--since", "9" * 5000 + "m"], "at most a few thousand years"),
        (["--until", "99999999999w"], "at most a few thousand years"),
        # Inside the calendar as typed, outside it in UTC.
        (["--since", "0001-01-01T00:00+01:00"], "years 1 to 9999"),
        (["--until", "9999-12-31T23:59-01:00"], "years 1 to 9999"),
        (["--since", "-5d"], "or an age such as 24h"),
        (["--until", "10000-01-01"], "or an age such as 24h"),
        (["--limit", "99999999999999999999"], "9223372036854775807"),
        (["--limit", "9223372036854775808"], "9223372036854775807"),
        (["--limit", "-1"], "greater than or equal to 0"),
        (["--limit", "-99999999999999999999"], "greater than or equal to 0"),
        (["--min-probability", "1e400"], "less than or equal to 1"),
        (["--min-probability", "inf"], "less than or equal to 1"),
        (["--min-probability", "-1"], "greater than or equal to 0"),
        (["--min-probability", "nan"], "less than or equal to 1"),
        (["--min-probability", "1" * 5000], "less than or equal to 1"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_item8_absurd_arguments_are_usage_errors(
    args: list[str], accepted: str, upgraded: dict[str, str], tmp_path: Path
) -> None:
    # A wide terminal, so that rich's error panel does not fold the message.
    out = run_cli("results", *args, cwd=tmp_path, env={**upgraded, "COLUMNS": "1000"})
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert not out.stdout, "nothing printed as if it were a result"
    (line,) = [line for line in out.stderr.splitlines() if "Invalid value" in line]
    assert f"Invalid value for '{args[0]}'" in line, out.stderr
    assert accepted in line, out.stderr


@pytest.mark.parametrize("age", ["520w", "3650d", "24h", "0s"])
def test_item8_large_but_real_ages_still_work(
    age: str, upgraded: dict[str, str], tmp_path: Path
) -> None:
    out = run_cli("results", "--since", age, "--limit", str(2**63 - 1), cwd=tmp_path, env=upgraded)
    assert out.returncode == 0, out.stderr
