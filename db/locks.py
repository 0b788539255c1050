"""Named leases in the database, so only one process on any host runs a job at a time."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Lock
from db.session import session_scope
from db.types import utcnow


def acquire_lock(factory: sessionmaker[Session], *, name: str, holder: str, ttl: timedelta) -> bool:
    """Take the lease `name` for `holder` for `ttl`; False when someone else holds it.

    Atomic on SQLite and PostgreSQL alike: the primary key makes the first insert win,
    and taking over an expired lease is one conditional UPDATE.
    """
    now = utcnow()
    try:
        with session_scope(factory) as session:
            session.add(Lock(name=name, holder=holder, acquired_at=now, expires_at=now + ttl))
        return True
    except IntegrityError:
        pass
    with session_scope(factory) as session:
        taken = session.execute(
            update(Lock)
            .where(Lock.name == name, (Lock.expires_at < now) | (Lock.holder == holder))
            .values(holder=holder, acquired_at=now, expires_at=now + ttl)
        )
        return bool(taken.rowcount)  # type: ignore[attr-defined]


def release_lock(factory: sessionmaker[Session], *, name: str, holder: str) -> None:
    """Give the lease back (only if `holder` still holds it)."""
    with session_scope(factory) as session:
        session.execute(delete(Lock).where(Lock.name == name, Lock.holder == holder))
