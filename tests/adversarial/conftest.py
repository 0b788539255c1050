"""Hostile and racing input: every test here reproduces an attack or an unlucky race."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.tiny_model import register_model
from worker.filing import Filing
from worker.imaging import DecodeOptions
from worker.inference import ModelCache
from worker.screening import ScreeningContext

PSEUDONYM_KEY = b"adversarial-test-pseudonym-key-0123"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/adversarial, so `-m adversarial` runs them alone."""
    for item in items:
        if "tests/adversarial/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.adversarial)


@pytest.fixture
def filing(tmp_path: Path) -> Filing:
    """The service's folders under `tmp_path`, the inbox made."""
    found = Filing(
        inbox=tmp_path / "inbox", archive=tmp_path / "archive", quarantine=tmp_path / "quarantine"
    )
    found.inbox.mkdir()
    return found


@pytest.fixture
def context(
    session_factory: sessionmaker[Session], filing: Filing, tmp_path: Path
) -> Iterator[ScreeningContext]:
    """A worker's screening context with a tiny model active, filing into `filing`."""
    register_model(session_factory, model_dir=tmp_path / "models", version="tiny-1")
    with ThreadPoolExecutor(2) as executor:
        yield ScreeningContext(
            session_factory=session_factory,
            models=ModelCache(session_factory),
            decode_options=DecodeOptions(pseudonym_key=PSEUDONYM_KEY),
            executor=executor,
            worker_name="test:1",
            filing=filing,
        )
