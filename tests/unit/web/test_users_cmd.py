"""`cxr-screen users add|list` and the refusals of `cxr-screen web` (and of `up` with the
web pages enabled), run as a person would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cxr_screen.web.passwords import verify_password
from db import users
from db.models import UserRole
from db.session import session_scope
from db.users import find_user, shared_user
from tests.cli_runner import cxr_screen_executable


def _run(
    *args: str, url: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")} | (env or {})
    env["CXR_DATABASE_URL"] = url
    return subprocess.run(
        [cxr_screen_executable(), *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_users_add_reads_the_password_from_stdin_and_hashes_it(
    migrated_engine: Engine,
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
) -> None:
    password = "a sentence for a password"
    done = _run("users", "add", "ines", "--role", "admin", "--password-stdin",
                url=database_url, cwd=tmp_path, stdin=password + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "added ines (admin)" in done.stdout
    with session_factory() as session:
        user = find_user(session, name="ines")
        assert user is not None
        assert user.role is UserRole.ADMIN
        assert user.password_hash is not None
        assert password not in user.password_hash
        assert verify_password(password, user.password_hash)
    listed = _run("users", "list", "-f", "csv", url=database_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "ines,admin," in listed.stdout
    assert "scrypt" not in listed.stdout
    again = _run("users", "add", "ines", "--password-stdin", url=database_url, cwd=tmp_path,
                 stdin=password + "\n")  # fmt: skip
    assert again.returncode == 2
    assert "a user called 'ines' already exists" in again.stderr


def test_users_add_refuses_short_passwords_odd_names_and_the_shared_account(
    migrated_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    short = _run("users", "add", "ana", "--password-stdin", url=database_url, cwd=tmp_path,
                 stdin="short\n")  # fmt: skip
    assert short.returncode == 2
    assert "at least 12" in short.stderr
    odd = _run("users", "add", "<b>x", "--password-stdin", url=database_url, cwd=tmp_path,
               stdin="long enough password\n")  # fmt: skip
    assert odd.returncode == 2
    assert "is not a sign-in name" in odd.stderr
    shared = _run("users", "add", "shared", "--password-stdin", url=database_url, cwd=tmp_path,
                  stdin="long enough password\n")  # fmt: skip
    assert shared.returncode == 2
    assert "CXR_WEB_PASSWORD" in shared.stderr


def test_users_add_takes_no_password_argument(
    migrated_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    done = _run("users", "add", "ana", "--password", "long enough password",
                url=database_url, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "No such option" in done.stderr


def test_web_refuses_to_start_when_nobody_could_sign_in(
    migrated_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    done = _run("web", "--port", "1", url=database_url, cwd=tmp_path)
    assert done.returncode == 2
    assert "nobody could sign in: add a user with `cxr-screen users add" in done.stderr


def test_up_with_the_web_pages_refuses_to_start_when_nobody_could_sign_in(
    migrated_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    done = _run("up", url=database_url, cwd=tmp_path, env={"CXR_WEB_ENABLED": "true"})
    assert done.returncode == 2
    assert done.stderr.startswith(
        "cxr-screen: error: nobody could sign in: add a user with `cxr-screen users add"
    )
    assert done.stderr.count("\n") == 1, done.stderr
    assert "started" not in done.stdout


def test_web_refuses_an_old_schema(database_url: str, tmp_path: Path) -> None:
    done = _run("web", url=database_url, cwd=tmp_path)
    assert done.returncode == 2
    assert "run `cxr-screen db upgrade`" in done.stderr


def test_web_refuses_to_start_when_only_the_shared_account_is_left(
    migrated_engine: Engine,
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
) -> None:
    """The shared password's account has no password of its own: once CXR_WEB_PASSWORD
    is unset again, nobody can sign in with it."""
    with session_scope(session_factory) as session:
        shared_user(session, name="shared")

    done = _run("web", "--port", "1", url=database_url, cwd=tmp_path)

    assert done.returncode == 2
    assert "nobody could sign in" in done.stderr


def test_two_first_shared_sign_ins_at_once_share_one_account(
    migrated_engine: Engine,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second request found no account, then lost the race to insert it: it reads
    the winner's row instead of failing (the unique name refuses a second one)."""
    with session_scope(session_factory) as session:
        winner = shared_user(session, name="shared").id
    real_find = users.find_user
    calls: list[str] = []

    def stale_then_real(session: Session, *, name: str) -> object:
        calls.append(name)
        return None if len(calls) == 1 else real_find(session, name=name)

    monkeypatch.setattr(users, "find_user", stale_then_real)

    with session_scope(session_factory) as session:
        loser = shared_user(session, name="shared")
        assert loser.id == winner
        assert len(users.list_users(session)) == 1
    assert calls == ["shared", "shared"]
