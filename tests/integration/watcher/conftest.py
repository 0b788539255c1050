"""A deployment for watcher tests: folders, a real database, a real broker, a live watcher."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Duplicate, Scan
from db.session import make_engine, make_session_factory
from tests.conftest import fresh_database
from tests.processes import RedisServer, wait_until
from worker.celery_app import SCREEN_TASK, SCREENING_QUEUE, create_app
from worker.settings import Settings, load_settings
from worker.watcher.observer import Watcher
from worker.watcher.service import build_watcher

# Short waits keep the tests quick; the mechanisms are the production ones.
FAST: dict[str, Any] = {"stable_seconds": 0.5, "batch_wait_ms": 300, "batch_size": 16}


@dataclass
class Stack:
    """Folders, database and broker of one test deployment."""

    root: Path
    database_url: str
    broker_url: str
    factory: sessionmaker[Session]
    redis: RedisServer | None

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(
            **{
                "database_url": self.database_url,
                "broker_url": self.broker_url,
                "inbox": self.inbox,
                "archive": self.archive,
                "quarantine": self.quarantine,
                **FAST,
                **overrides,
            }
        )

    def env(self, **overrides: Any) -> dict[str, str]:
        """The same settings as CXR_* variables, for a `cxr-screen watch` process."""
        values = {
            "database_url": self.database_url,
            "broker_url": self.broker_url,
            "inbox": self.inbox,
            "archive": self.archive,
            "quarantine": self.quarantine,
            **FAST,
            **overrides,
        }
        return {f"CXR_{k.upper()}": str(v) for k, v in values.items()}

    def scans(self) -> list[Scan]:
        with self.factory() as session:
            return list(session.scalars(select(Scan).order_by(Scan.id)))

    def duplicates(self) -> list[Duplicate]:
        with self.factory() as session:
            return list(session.scalars(select(Duplicate).order_by(Duplicate.id)))

    def batches(self) -> list[list[int]]:
        """The scan ids of every screening task waiting on the broker, one list per task."""
        messages: list[bytes | str]
        if self.redis is not None:
            client = redis.Redis.from_url(self.broker_url)
            try:
                messages = list(client.lrange(SCREENING_QUEUE, 0, -1))
            finally:
                client.close()
        else:
            path = self.broker_url.removeprefix("sqla+sqlite:///")
            if not Path(path).exists():
                return []
            with sqlite3.connect(path) as connection:
                try:
                    rows = connection.execute(
                        "SELECT m.payload FROM kombu_message m JOIN kombu_queue q "
                        "ON m.queue_id = q.id WHERE q.name = ? ORDER BY m.id",
                        (SCREENING_QUEUE,),
                    ).fetchall()
                except sqlite3.OperationalError:  # no task sent yet: no tables
                    return []
            messages = [row[0] for row in rows]
        batches = []
        for raw in messages:
            message = json.loads(raw)
            assert message["headers"]["task"] == SCREEN_TASK
            args = json.loads(base64.b64decode(message["body"]))[0]
            batches.append(list(args[0]))
        return batches


@contextmanager
def _stack(kind: str, tmp_path: Path) -> Iterator[Stack]:
    server = None if kind == "embedded" else RedisServer(tmp_path / "redis")
    with fresh_database("sqlite" if server is None else "postgresql", tmp_path) as url:
        engine = make_engine(url)
        upgrade(engine)
        if server is not None:
            server.start()
        (tmp_path / "inbox").mkdir()
        broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}" if server is None else server.url
        try:
            yield Stack(tmp_path, url, broker, make_session_factory(engine), server)
        finally:
            if server is not None:
                server.stop()
            engine.dispose()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Stack]:
    """The default deployment: SQLite database, SQLite broker."""
    with _stack("embedded", tmp_path) as stack:
        yield stack


@pytest.fixture(
    params=["embedded", pytest.param("redis+postgresql", marks=pytest.mark.integration)]
)
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Each deployment in turn: embedded, then Redis + PostgreSQL."""
    with _stack(request.param, tmp_path) as found:
        yield found


class Running:
    """A watcher running on its own thread, with a real observer, as `cxr-screen watch` runs it."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.errors: list[BaseException] = []
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run(on_ready=self._ready.set)
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def start(self) -> None:
        self.thread.start()
        wait_until(
            lambda: self._ready.is_set() or not self.thread.is_alive(),
            timeout=30,
            what="the watcher to start",
            interval=0.02,
        )
        self.assert_alive()

    def assert_alive(self) -> None:
        assert not self.errors, f"the watcher died: {self.errors!r}"
        assert self.thread.is_alive(), "the watcher stopped"

    def stop(self) -> None:
        self.watcher.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the watcher did not stop within 30 s"
        assert not self.errors, f"the watcher died: {self.errors!r}"


@contextmanager
def running(stack: Stack, **overrides: Any) -> Iterator[Running]:
    """Run a watcher for `stack` (settings overridden by keyword) until the block ends."""
    settings = stack.settings(**overrides)
    app = create_app(settings, include=())
    live = Running(build_watcher(settings, session_factory=stack.factory, app=app))
    live.start()
    try:
        yield live
    finally:
        live.stop()
        app.close()


@pytest.fixture(autouse=True)
def _watcher_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.watcher")
