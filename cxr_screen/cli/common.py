"""What every command needs: settings, the database, and one-line errors for people."""

from __future__ import annotations

import re
from urllib.parse import unquote

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.output import printable
from db.session import make_engine
from worker.settings import Settings, SettingsError, load_settings

# The largest SQL LIMIT every database takes (a signed 64-bit integer); options that
# become one are capped here, so that a huge number is a usage error and not a traceback.
MAX_SQL_LIMIT = 2**63 - 1
HIDDEN = "***"
# Query parameters that carry a secret (libpq takes ?password=, some brokers ?token=).
_SECRET_PARAMETER = re.compile(r"([?&;][^=&;]*(?:pass|secret|token)[^=&;]*=)([^&;]*)", re.I)
# A shorter password is not scrubbed from free text: it would garble every message.
_MIN_SCRUBBED = 4


class CommandError(Exception):
    """A problem the person running the command can fix; printed as one line, exit 2.

    The text is printable and one line whatever it quotes: file names come from whoever
    named the files, so control characters and line breaks are shown escaped (`\\x1b`).
    """

    def __str__(self) -> str:
        return printable(super().__str__()).replace("\n", "\\n").replace("\t", "\\t")


def settings_or_fail() -> Settings:
    """Load settings, turning validation errors into a `CommandError`."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise CommandError(f"invalid configuration: {exc}") from None


def redacted(url: str) -> str:
    """The URL with its password (and any secret query parameter) shown as `***`.

    Parsed by hand rather than by a URL library, which raises on some malformed URLs (a
    port that is not a number) and splits others in the wrong place (an unescaped `@` in
    the password): the password is everything between the user's `:` and the last `@`.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "(not a URL)"
    userinfo, at, location = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:{HIDDEN}@{location}"
    return f"{scheme}://" + _SECRET_PARAMETER.sub(lambda m: m.group(1) + HIDDEN, rest)


def scrubbed(text: str, url: str) -> str:
    """`text` (a driver's error message) without the secrets of `url`, wherever they appear."""
    secrets = {value for _, value in _SECRET_PARAMETER.findall(url.partition("://")[2])}
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    if at and ":" in userinfo:
        secrets.add(userinfo.split(":", 1)[1])
    secrets |= {unquote(s) for s in secrets}
    # A parser that split a malformed URL at a `/`, `@` or `:` inside the password quotes
    # a piece of it ("Port could not be cast to integer value as 's3cr3t'").
    secrets |= {piece for s in secrets for piece in re.split(r"[/@:?#]", s)}
    text = text.replace(url, redacted(url))
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SCRUBBED:
            text = text.replace(secret, HIDDEN)
    return text


def database_error(exc: OperationalError | ProgrammingError, url: str) -> CommandError:
    """Explain a database failure: unreachable server, or a schema that was never created."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    detail = scrubbed(detail, url)
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
    return make_engine(settings.storage.database_url)
