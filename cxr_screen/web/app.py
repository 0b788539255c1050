"""The web app: pages behind a sign-in, a form token on every form, /metrics and /healthz."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr
from sqlalchemy import Engine

from cxr_screen.web.access import CsrfError, ForbiddenError, NotSignedInError, csrf_guard
from cxr_screen.web.render import render
from cxr_screen.web.routes import login, models, monitoring, results, scans, service
from cxr_screen.web.session_key import session_key
from cxr_screen.web.state import WebState, template_environment
from db.session import make_engine, make_session_factory
from worker.decode_config import decode_options
from worker.imaging import DecodeOptions
from worker.imaging.pseudonym import KEY_FILE_NAME
from worker.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
# Pages show patient data: never cached, framed or given a referrer; scripts from nowhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """The app on the configured database (or `engine`), keys and folders."""
    engine = engine or make_engine(settings.storage.database_url)
    app = FastAPI(
        title="cxr-screen",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(csrf_guard)],
    )
    app.state.web = WebState(
        settings=settings,
        engine=engine,
        factory=make_session_factory(engine),
        key=session_key(settings),
        decode=picture_options(settings),
        templates=template_environment(),
    )
    for module in (login, results, scans, models, service, monitoring):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(NotSignedInError, _not_signed_in)
    app.add_exception_handler(ForbiddenError, _forbidden)
    app.add_exception_handler(CsrfError, _csrf_refused)
    app.add_exception_handler(RequestValidationError, _invalid_input)
    app.middleware("http")(_security_headers)
    return app


def picture_options(settings: Settings) -> DecodeOptions:
    """The site's decoder options, for showing a scan's model input.

    The decoder also computes a patient reference, which the pages never take from it:
    without a configured key, a throw-away one serves (and no key file is written).
    """
    configured = settings.decoder.pseudonym_key is not None
    if configured or (settings.storage.var_dir / KEY_FILE_NAME).exists():
        return decode_options(settings, create_key=False)
    throw_away = SecretStr(secrets.token_hex(32))
    return decode_options(settings.model_copy(update={"pseudonym_key": throw_away}))


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    if request.method == "GET":
        return RedirectResponse("/login", status_code=303)
    return Response("sign in first\n", status_code=401, media_type="text/plain")


async def _forbidden(request: Request, exc: Exception) -> Response:
    context = {"title": "Not allowed", "message": "Only an admin may do this."}
    return render(request, "refused.html", context, reader=None, status=403)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    context = {
        "title": "Form refused",
        "message": "The form was not sent from these pages, or it is older than your "
        "sign-in: reload the page and send it again.",
    }
    return render(request, "refused.html", context, reader=None, status=403)


async def _invalid_input(request: Request, exc: Exception) -> Response:
    """Name the fields that are wrong, never their values: FastAPI's own answer quotes
    what was sent, a password included."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    fields = sorted({".".join(str(part) for part in error.get("loc", ())[1:]) for error in errors})
    named = ", ".join(field for field in fields if field) or "request"
    return Response(
        f"not accepted: {named} (missing, too long or not a valid value); go back and correct it\n",
        status_code=422,
        media_type="text/plain",
    )
