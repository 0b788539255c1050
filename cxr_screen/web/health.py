"""What /healthz checks: the database (at the newest schema), the broker, an active model."""

from __future__ import annotations

from dataclasses import dataclass

from kombu.connection import Connection
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import current_revision, head_revision
from db.model_registry import get_active_model
from db.session import session_scope

BROKER_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's state, in words that never quote a URL or a password."""

    name: str
    ok: bool
    detail: str


def check_database(engine: Engine) -> Check:
    """Reachable, and migrated to this version's schema."""
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        return Check("database", False, f"unreachable ({type(exc).__name__})")
    head = head_revision()
    if revision != head:
        return Check(
            "database", False, f"schema at {revision}, not {head}: run `cxr-screen db upgrade`"
        )
    return Check("database", True, f"schema {head}")


def check_broker(url: str) -> Check:
    """The Celery broker accepts a connection."""
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT_S) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - kombu raises the transport's own errors
        return Check("broker", False, f"unreachable ({type(exc).__name__})")
    return Check("broker", True, "reachable")


def check_model(factory: sessionmaker[Session]) -> Check:
    """A model is in service."""
    try:
        with session_scope(factory) as session:
            active = get_active_model(session)
            version = active.version if active is not None else None
    except SQLAlchemyError as exc:
        return Check("active_model", False, f"unknown ({type(exc).__name__})")
    if version is None:
        return Check("active_model", False, "none: promote one (`cxr-screen models promote`)")
    return Check("active_model", True, version)
