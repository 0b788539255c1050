"""Keyword-only data access for the people who sign in to the web pages (caller commits)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import User, UserRole


class UserExistsError(ValueError):
    """A user with that name is already recorded."""


def add_user(session: Session, *, name: str, role: UserRole, password_hash: str | None) -> User:
    """Record a new user; `UserExistsError` when the name is taken."""
    if find_user(session, name=name) is not None:
        raise UserExistsError(name)
    user = User(name=name, role=role, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, *, name: str) -> User | None:
    """The user called `name`, or None."""
    return session.scalars(select(User).where(User.name == name)).first()


def get_user(session: Session, *, user_id: int) -> User | None:
    """The user with id `user_id`, or None."""
    return session.get(User, user_id)


def list_users(session: Session) -> Sequence[User]:
    """Every user, by name."""
    return session.scalars(select(User).order_by(User.name)).all()


def count_users(session: Session, *, with_password: bool = False) -> int:
    """How many users are recorded (only those with a password of their own when
    `with_password`: the shared password's account has none)."""
    query = select(User.id)
    if with_password:
        query = query.where(User.password_hash.is_not(None))
    return len(session.scalars(query).all())


def shared_user(session: Session, *, name: str) -> User:
    """The account of the shared password (no password of its own), made on first use."""
    user = find_user(session, name=name)
    if user is not None:
        return user
    try:
        # A savepoint: two first sign-ins at once both insert, and the loser reads the
        # winner's row instead of failing the whole request.
        with session.begin_nested():
            user = User(name=name, role=UserRole.ADMIN, password_hash=None)
            session.add(user)
    except IntegrityError:
        user = find_user(session, name=name)
        if user is None:
            raise
    return user
