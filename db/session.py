"""Engines and sessions, built from a URL by functions (never at import time)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for `url`, tuned for concurrent workers on each backend.

    SQLite: create the parent folder and the file itself owner-only (see
    `private_sqlite_file`), enable WAL (readers do not block the writer) and a busy
    timeout, so the watcher, workers and CLI can share one file. PostgreSQL:
    pre-ping pooled connections so a database restart is survived.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            private_sqlite_file(Path(database))
        connect_args = {"timeout": 30.0, **kwargs.pop("connect_args", {})}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite_file(path: Path) -> None:
    """Make the SQLite file at `path` unreadable to other users: it holds patient data.

    A missing file is created empty and owner-only (0600) before SQLite opens it (an
    empty file is a valid empty database), whatever the umask; SQLite gives its -wal,
    -shm and -journal files the database file's permissions. A file (or side file)
    left world-readable by an older version loses every permission for other users
    when this process owns it. Call it for every SQLite file the service opens: the
    results database here, the embedded broker's too.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        for existing in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)):
            _drop_other_access(existing)
        return
    os.close(descriptor)


def _drop_other_access(path: Path) -> None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    if status.st_uid == os.getuid() and status.st_mode & 0o007:
        try:
            path.chmod(stat.S_IMODE(status.st_mode) & ~0o007)
        except OSError:
            # A read-only mount (a copy opened for reading): nothing is written there,
            # and the engine still opens it.
            return


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
