"""A web app on a seeded database (SQLite and PostgreSQL), and a signed-in test client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cxr_screen.web.app import create_app
from tests.conftest import SHARED_DIR
from tests.web_seed import ADMIN, READER, Seeded, seed
from worker.settings import Settings, load_settings

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def web_settings(database_url: str, folders: Path, **overrides: object) -> Settings:
    """Settings on `database_url` with every folder and key under `folders`."""
    values: dict[str, object] = {
        "database_url": database_url,
        "broker_url": f"sqla+sqlite:///{folders / 'broker.db'}",
        "inbox": folders / "inbox",
        "archive": folders / "archive",
        "quarantine": folders / "quarantine",
        "model_dir": folders / "models",
        "pseudonym_key": "k" * 32,
        "web_secret": "s" * 32,
    }
    values.update(overrides)
    return load_settings(**values)


def csrf_of(html: str) -> str:
    """The form token in a page."""
    found = _TOKEN.search(html)
    assert found, "the page has no form token"
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str) -> str:
    """Sign in through the form; returns the session's form token."""
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/results").text)


@dataclass
class Web:
    """The app's client, the rows it shows, and where its files are."""

    client: TestClient
    seeded: Seeded
    settings: Settings
    factory: sessionmaker[Session]
    engine: Engine
    database_url: str

    def sign_in_reader(self) -> str:
        return sign_in(self.client, *READER)

    def sign_in_admin(self) -> str:
        return sign_in(self.client, *ADMIN)


@pytest.fixture
def web(
    migrated_engine: Engine,
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
) -> Iterator[Web]:
    """A seeded app and a client that is not signed in yet."""
    settings = web_settings(database_url, tmp_path)
    seeded = seed(session_factory, folders=tmp_path, shared=SHARED_DIR)
    app = create_app(settings, engine=migrated_engine)
    with TestClient(app) as client:
        yield Web(client, seeded, settings, session_factory, migrated_engine, database_url)
