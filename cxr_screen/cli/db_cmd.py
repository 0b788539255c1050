"""`cxr-screen db ...`: create and upgrade the database schema."""

from __future__ import annotations

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import database_error, engine_for, redacted, settings_or_fail
from db.migrate import current_revision, head_revision, upgrade

db_app = typer.Typer(help="Create or upgrade the database schema (SQLite or PostgreSQL).")


@db_app.command("upgrade")
def upgrade_cmd() -> None:
    """Create the schema, or bring it to this version's newest revision (safe to repeat)."""
    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()
    where = redacted(settings.storage.database_url)
    if before == after:
        typer.echo(f"{where}: schema already at revision {after}")
    else:
        typer.echo(f"{where}: schema upgraded from {before or 'empty'} to {after}")


@db_app.command("current")
def current_cmd() -> None:
    """Show the schema revision of the database and the newest this version knows."""
    settings = settings_or_fail()
    engine = engine_for(settings)
    try:
        revision = current_revision(engine)
    except OperationalError as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if revision == head else "run `cxr-screen db upgrade`"
    where = redacted(settings.storage.database_url)
    typer.echo(f"{where}: at {revision or 'empty'}, newest {head} ({state})")
