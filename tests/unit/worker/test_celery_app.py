"""The Celery app's broker connection for each kind of broker URL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kombu.transport.redis import Transport as RedisTransport

from worker.celery_app import (
    EmbeddedBackgroundTransport,
    EmbeddedTransport,
    create_app,
    prepare_embedded_broker,
)
from worker.settings import Settings


def test_the_embedded_broker_polls_its_table_every_tenth_of_a_second(tmp_path: Path) -> None:
    broker = tmp_path / "var" / "broker.db"
    app = create_app(Settings(broker_url=f"sqla+sqlite:///{broker}"), include=())
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, EmbeddedTransport)
        assert connection.transport.polling_interval == 0.1
        assert connection.hostname == f"sqlite:///{broker}"
        # The engine options still reach SQLAlchemy: wait for SQLite's write lock.
        assert connection.transport_options == {"connect_args": {"timeout": 30}}
    # A message goes through the table and comes back out of it.
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue("probe")
        queue.put({"scan": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"scan": 1}
        message.ack()
        queue.close()
    assert broker.is_file()


def test_redis_keeps_kombus_transport_and_the_visibility_timeout() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:6379/0")
    app = create_app(settings, include=())
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, RedisTransport)
        assert connection.transport_options == {
            "visibility_timeout": settings.screening.visibility_timeout_s
        }


def test_a_training_only_worker_polls_the_embedded_broker_once_a_second(tmp_path: Path) -> None:
    broker = tmp_path / "broker.db"
    app = create_app(Settings(broker_url=f"sqla+sqlite:///{broker}"), include=(), background=True)
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, EmbeddedBackgroundTransport)
        assert connection.transport.polling_interval == 1.0
        assert connection.hostname == f"sqlite:///{broker}"


def test_the_embedded_broker_is_prepared_once_before_its_consumers_start(tmp_path: Path) -> None:
    broker = tmp_path / "var" / "broker.db"
    settings = Settings(broker_url=f"sqla+sqlite:///{broker}")
    prepare_embedded_broker(settings)
    prepare_embedded_broker(settings)  # again, on tables that exist: nothing to do
    with sqlite3.connect(broker) as db:
        queues = {row[0] for row in db.execute("SELECT name FROM kombu_queue")}
    assert queues == {"screening", "training"}


def test_preparing_a_redis_broker_touches_nothing() -> None:
    prepare_embedded_broker(Settings(broker_url="redis://127.0.0.1:1/0"))  # no server there
