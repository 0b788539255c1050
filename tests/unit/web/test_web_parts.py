"""Small parts of the web pages: reason and remedy, rates per minute, the import path,
and the interactive `users add`."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cxr_screen.cli.main import app
from cxr_screen.web.passwords import verify_password
from cxr_screen.web.routes.scans import reason_and_remedy
from cxr_screen.web.routes.service import per_minute
from db.users import find_user


def test_an_error_splits_into_reason_and_remedy_at_its_first_semicolon() -> None:
    assert reason_and_remedy("a.dcm: is a CT; only chest radiographs; see docs") == (
        "a.dcm: is a CT",
        "only chest radiographs; see docs",
    )
    assert reason_and_remedy("worker died 3 times") == ("worker died 3 times", None)
    assert reason_and_remedy(None) == (None, None)


def test_finished_scans_become_a_rate_per_minute_in_ten_minute_steps() -> None:
    now = datetime(2026, 12, 8, 12, 4, 30, tzinfo=UTC)
    start = datetime(2026, 12, 8, 9, 10, tzinfo=UTC)  # 18 buckets up to the current one
    times = [start + timedelta(minutes=1)] * 20 + [now - timedelta(minutes=1)] * 5
    times.append(start - timedelta(seconds=1))  # before the window: not counted
    rates = per_minute(times, now=now)
    assert len(rates) == 18
    assert rates[0] == (start, 2.0)
    assert rates[-1] == (datetime(2026, 12, 8, 12, 0, tzinfo=UTC), 0.5)
    assert sum(rate for _, rate in rates) == 2.5


def test_the_web_server_never_imports_tensorflow() -> None:
    code = (
        "import sys, cxr_screen.cli.main, cxr_screen.web.app; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF loaded'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_users_add_asks_twice_for_the_password(
    migrated_engine: Engine,
    session_factory: sessionmaker[Session],
    database_url: str,
) -> None:
    result = CliRunner().invoke(
        app,
        ["users", "add", "olga"],
        input="twelve+ characters\ntwelve+ characters\n",
        env={"CXR_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    assert "twelve+ characters" not in result.output
    with session_factory() as session:
        user = find_user(session, name="olga")
        assert user is not None
        assert verify_password("twelve+ characters", user.password_hash)
    mismatch = CliRunner().invoke(
        app,
        ["users", "add", "pia"],
        input="twelve+ characters\nsomething else!!\n",
        env={"CXR_DATABASE_URL": database_url},
    )
    assert mismatch.exit_code != 0
