"""Who is asking: the signed-in user from the session cookie, roles, and the form token."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy.orm import Session

from cxr_screen.web.sessions import COOKIE_NAME, MAX_AGE_S, WebSession, decode, encode
from cxr_screen.web.state import web_state
from db.models import UserRole
from db.session import session_scope
from db.users import get_user

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"


class NotSignedInError(Exception):
    """The request has no valid session of a known user."""


class ForbiddenError(Exception):
    """The user's role may not do this."""


class CsrfError(Exception):
    """A form was posted without this session's token."""


@dataclass(frozen=True, slots=True)
class Reader:
    """The signed-in person."""

    id: int
    name: str
    role: UserRole
    csrf: str

    @property
    def is_admin(self) -> bool:
        """Whether they may change which model is in service."""
        return self.role is UserRole.ADMIN


def browser_session(request: Request) -> WebSession | None:
    """The session in the request's cookie, if it is genuine and current."""
    return decode(request.cookies.get(COOKIE_NAME), web_state(request).key)


def database(request: Request) -> Iterator[Session]:
    """A transaction for one request: committed when the handler returns."""
    with session_scope(web_state(request).factory) as session:
        yield session


# Committed when the handler returns, before the response leaves: a redirect after a
# review must find the review on the next page.
Db = Annotated[Session, Depends(database, scope="function")]


def signed_in(request: Request, session: Db) -> Reader:
    """The signed-in user; `NotSignedInError` for anyone else."""
    found = browser_session(request)
    if found is None or found.user_id is None:
        raise NotSignedInError
    user = get_user(session, user_id=found.user_id)
    if user is None:
        raise NotSignedInError
    return Reader(user.id, user.name, user.role, found.csrf)


def admin(reader: Annotated[Reader, Depends(signed_in)]) -> Reader:
    """The signed-in user if they are an admin; `ForbiddenError` otherwise."""
    if not reader.is_admin:
        raise ForbiddenError
    return reader


SignedIn = Annotated[Reader, Depends(signed_in)]
Admin = Annotated[Reader, Depends(admin)]


async def csrf_guard(request: Request) -> None:
    """Refuse every state-changing request whose form lacks the session's token.

    Applied to the whole app: a new form cannot forget it.
    """
    if request.method in SAFE_METHODS:
        return
    found = browser_session(request)
    if found is None:  # refused before its body is read: no session, no form
        raise CsrfError
    content_type = request.headers.get("content-type", "")
    token: object = None
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        token = (await request.form()).get(CSRF_FIELD)
    if not isinstance(token, str):
        raise CsrfError
    if not hmac.compare_digest(token.encode(), found.csrf.encode()):
        raise CsrfError


def set_session(response: Response, request: Request, session: WebSession) -> None:
    """Send `session` as the cookie: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    response.set_cookie(
        COOKIE_NAME,
        encode(session, web_state(request).key),
        max_age=MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or web_state(request).settings.web.web_https,
    )
