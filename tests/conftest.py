"""Fixtures shared by every test: where the shared real data lives, and skips without it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.session import make_engine, make_session_factory

# The real chest X-rays, DICOM files and ImageNet weights live beside the checkout, never
# inside it. CXR_SHARED_DIR points elsewhere (a CI cache, a site's own copy).
SHARED_DIR = Path(os.environ.get("CXR_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"{path} is absent: real data lives in ../shared beside the checkout "
            "(or set CXR_SHARED_DIR)"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (chest_xray/, chest_xray_fullres/, dicom/), or skip."""
    return _require(SHARED_DIR / "data")


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    """The six real radiograph DICOM files."""
    return _require(shared_data / "dicom")


@pytest.fixture(scope="session")
def vgg16_weights() -> Path:
    """The ImageNet VGG16 convolutional base (Keras 3 weights file)."""
    return _require(SHARED_DIR / "weights" / "vgg16_imagenet_notop.weights.h5")


# --- databases -------------------------------------------------------------------------
# Every db test runs on SQLite and on the real PostgreSQL. Each PostgreSQL test gets a
# schema of its own (search_path in the URL), so tests never see each other's rows and
# the same URL works for the CLI in a subprocess.
POSTGRES_URL = os.environ.get(
    "CXR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_schema_url(name: str) -> str:
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{name}"


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty database URL of `kind` ("sqlite" or "postgresql"), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'cxr.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc.orig}); "
            "the test command starts it: see README"
        )
    try:
        yield _postgres_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL: a SQLite file, or a fresh PostgreSQL schema."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database upgraded to the newest migration."""
    engine = make_engine(database_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session_factory(migrated_engine: Engine) -> sessionmaker[Session]:
    """Sessions on the migrated database."""
    return make_session_factory(migrated_engine)
