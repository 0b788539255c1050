"""What every command needs: settings, the database, and one-line errors for people."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from db.session import make_engine
from worker.settings import Settings, SettingsError, load_settings


class CommandError(Exception):
    """A problem the person running the command can fix; printed as one line, exit 2."""


def settings_or_fail() -> Settings:
    """Load settings, turning validation errors into a `CommandError`."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise CommandError(f"invalid configuration: {exc}") from None


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def database_error(exc: OperationalError | ProgrammingError, url: str) -> CommandError:
    """Explain a database failure: unreachable server, or a schema that was never created."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if "no such table" in detail or ("does not exist" in detail and "relation" in detail):
        return CommandError(
            f"the database at CXR_DATABASE_URL={redacted(url)} has no cxr-screen schema "
            f"({detail}); run `cxr-screen db upgrade` first"
        )
    return CommandError(
        f"cannot use the database at CXR_DATABASE_URL={redacted(url)}: {detail}; check that "
        "the server is running and the URL (driver, host, port, user, database) is right"
    )


def engine_for(settings: Settings) -> Engine:
    """An engine on the configured database."""
    return make_engine(settings.database_url)
