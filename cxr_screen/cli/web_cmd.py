"""`cxr-screen web`: the web pages, on CXR_WEB_HOST:CXR_WEB_PORT (127.0.0.1 by default)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from cxr_screen.cli.common import CommandError, database_error, engine_for, settings_or_fail
from db.migrate import current_revision, head_revision
from db.session import make_session_factory, session_scope
from db.users import count_users
from worker.logs import configure_logging
from worker.settings import Settings


def check_sign_in(settings: Settings, session: Session) -> None:
    """Refuse to serve pages nobody could sign in to: no account and no CXR_WEB_PASSWORD.

    `cxr-screen web` checks it before listening, and `cxr-screen up` before starting
    anything when CXR_WEB_ENABLED is set.
    """
    # The shared password's account has no password of its own: with CXR_WEB_PASSWORD
    # unset again, it lets nobody in.
    if settings.web.web_password is None and count_users(session, with_password=True) == 0:
        raise CommandError(
            "nobody could sign in: add a user with `cxr-screen users add NAME --role "
            "admin`, or set CXR_WEB_PASSWORD (one shared password)"
        )


def web(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on; default CXR_WEB_HOST (127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on; default CXR_WEB_PORT (8080)."),
    ] = None,
) -> None:
    """Serve the web pages: results, scans and reviews, models, service; /metrics, /healthz.

    People sign in with an account made by `cxr-screen users add NAME --role reader|admin`,
    or (minimal mode) with the shared CXR_WEB_PASSWORD. Bound to 127.0.0.1 unless
    CXR_WEB_HOST or --host says otherwise: put a TLS proxy in front before opening it to
    a network. Stop with Ctrl-C or SIGTERM.
    """
    import uvicorn

    from cxr_screen.web.app import create_app
    from cxr_screen.web.session_key import SessionKeyError

    settings = settings_or_fail()
    configure_logging(settings.log_level)
    # /healthz reads the schema's revision on every call: Alembic's two INFO lines each time
    # would bury the log.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    engine = engine_for(settings)
    try:
        revision, head = current_revision(engine), head_revision()
        if revision != head:
            found = f"at revision {revision}" if revision else "not created yet"
            raise CommandError(
                f"the database schema is {found}, this version needs {head}: run "
                "`cxr-screen db upgrade`"
            )
        with session_scope(make_session_factory(engine)) as session:
            check_sign_in(settings, session)
        app = create_app(settings, engine=engine)
    except (OperationalError, ProgrammingError) as exc:
        engine.dispose()
        raise database_error(exc, settings.storage.database_url) from None
    except SessionKeyError as exc:
        engine.dispose()
        raise CommandError(str(exc)) from None
    try:
        uvicorn.run(
            app,
            host=host or settings.web.web_host,
            port=port or settings.web.web_port,
            log_config=None,  # our escaping formatter, configured above
            server_header=False,
            proxy_headers=False,
        )
    finally:
        engine.dispose()
