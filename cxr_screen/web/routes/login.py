"""Sign in (a user's own password, or the shared CXR_WEB_PASSWORD) and sign out."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cxr_screen.web.access import Db, SignedIn, browser_session, set_session
from cxr_screen.web.passwords import verify_password
from cxr_screen.web.render import render
from cxr_screen.web.sessions import COOKIE_NAME, WebSession
from cxr_screen.web.state import SHARED_ACCOUNT, web_state
from db.users import find_user, shared_user

log = logging.getLogger(__name__)
router = APIRouter()
REFUSED = "The name or password is not right."
THROTTLED = "Too many wrong passwords from here for this name: wait five minutes, or ask an admin."


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    """The sign-in form; a session (for its form token) is started when there is none."""
    session = browser_session(request)
    fresh = session is None
    if session is None:
        session = WebSession.fresh()
    response = _form(request, session, message=None, name="")
    if fresh:
        set_session(response, request, session)
    return response


@router.post("/login")
def login(
    request: Request,
    db: Db,
    password: Annotated[str, Form(max_length=1024)],
    name: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Check the password; on success a new session (and token) for the user."""
    state = web_state(request)
    settings = state.settings
    user_id: int | None = None
    name = name.strip()
    client = request.client.host if request.client is not None else "-"
    if not state.throttle.allowed(client, name):
        log.warning("web sign-in refused unchecked: too many wrong passwords from one address")
        current = browser_session(request) or WebSession.fresh()
        return _form(request, current, message=THROTTLED, name=name, status=429)
    if name:
        user = find_user(db, name=name)
        # The hash first, whoever asked: an unknown name takes as long as a wrong password.
        if verify_password(password, user.password_hash if user else None) and user:
            user_id = user.id
    elif settings.web.web_password is not None and _same(
        password, settings.web.web_password.get_secret_value()
    ):
        user_id = shared_user(db, name=SHARED_ACCOUNT).id
    if user_id is None:
        state.throttle.failed(client, name)
        log.warning("web sign-in refused: unknown name or wrong password")
        current = browser_session(request) or WebSession.fresh()
        return _form(request, current, message=REFUSED, name=name, status=401)
    state.throttle.succeeded(client, name)
    log.info("web sign-in: %s", name or SHARED_ACCOUNT)
    response = RedirectResponse("/results", status_code=303)
    set_session(response, request, WebSession.fresh(user_id))
    return response


@router.post("/logout")
def logout(request: Request, reader: SignedIn) -> Response:
    """End the session: the cookie is dropped (and a new sign-in gets a new token)."""
    log.info("web sign-out: %s", reader.name)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


def _form(
    request: Request, session: WebSession, *, message: str | None, name: str, status: int = 200
) -> HTMLResponse:
    shared = web_state(request).settings.web.web_password is not None
    context = {"message": message, "name": name, "shared": shared}
    return render(request, "login.html", context, reader=None, csrf=session.csrf, status=status)


def _same(given: str, expected: str) -> bool:
    # Digests first: compare_digest on the texts would reveal the expected length.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
