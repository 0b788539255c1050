"""Named leases: one holder at a time, expired leases can be taken over."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.locks import acquire_lock, release_lock


def test_only_one_holder_until_released(session_factory: sessionmaker[Session]) -> None:
    hour = timedelta(hours=1)
    assert acquire_lock(session_factory, name="training", holder="a", ttl=hour)
    assert not acquire_lock(session_factory, name="training", holder="b", ttl=hour)
    assert acquire_lock(session_factory, name="other", holder="b", ttl=hour)
    release_lock(session_factory, name="training", holder="b")  # not b's: no effect
    assert not acquire_lock(session_factory, name="training", holder="b", ttl=hour)
    release_lock(session_factory, name="training", holder="a")
    assert acquire_lock(session_factory, name="training", holder="b", ttl=hour)


def test_an_expired_lease_is_taken_over(session_factory: sessionmaker[Session]) -> None:
    assert acquire_lock(
        session_factory, name="training", holder="crashed", ttl=timedelta(seconds=-1)
    )
    assert acquire_lock(session_factory, name="training", holder="b", ttl=timedelta(hours=1))
    assert not acquire_lock(session_factory, name="training", holder="c", ttl=timedelta(hours=1))
