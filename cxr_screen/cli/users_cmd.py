"""`cxr-screen users add|list`: the people who sign in to the web pages."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import CommandError, database_error, engine_for, settings_or_fail
from cxr_screen.cli.output import OutputFormat, write_rows
from cxr_screen.web.passwords import PasswordError, check_new_password, hash_password
from cxr_screen.web.state import SHARED_ACCOUNT
from db.models import UserRole
from db.session import make_session_factory, session_scope
from db.users import UserExistsError, add_user, list_users

users_app = typer.Typer(
    help="People who sign in to the web pages (`cxr-screen web`): add them, list them.",
    no_args_is_help=True,
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@users_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Sign-in name: letters, digits, . _ @ -.")],
    role: Annotated[
        UserRole,
        typer.Option(help="reader: results and reviews; admin: also promotes and rolls back."),
    ] = UserRole.READER,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of standard input (for scripts) "
            "instead of asking for it. Never give a password as an argument.",
        ),
    ] = False,
) -> None:
    """Add a user with a password (asked for twice, or read from standard input)."""
    if not _NAME.match(name):
        raise CommandError(
            f"{name[:80]!r} is not a sign-in name: use 1-64 letters, digits, '.', '_', '@' "
            "or '-', starting with a letter or digit"
        )
    if name == SHARED_ACCOUNT:
        raise CommandError(
            f"{SHARED_ACCOUNT!r} is the account of the shared password (CXR_WEB_PASSWORD); "
            "choose another name"
        )
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_new_password(password)
    except PasswordError as exc:
        raise CommandError(str(exc)) from None
    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        with session_scope(make_session_factory(engine)) as session:
            add_user(session, name=name, role=role, password_hash=hash_password(password))
    except UserExistsError:
        raise CommandError(f"a user called {name!r} already exists") from None
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()
    typer.echo(f"added {name} ({role.value})")


@users_app.command("list")
def list_(
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, csv or jsonl.")
    ] = OutputFormat.TABLE,
) -> None:
    """List the users, by name (never their password hashes)."""
    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        with session_scope(make_session_factory(engine)) as session:
            rows = [
                {
                    "name": user.name,
                    "role": user.role.value,
                    "created_at": user.created_at.isoformat(),
                    "password": "set" if user.password_hash else "none (shared password)",
                }
                for user in list_users(session)
            ]
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()
    write_rows(
        rows,
        columns=("name", "role", "created_at", "password"),
        output_format=output_format,
        title="users",
    )
