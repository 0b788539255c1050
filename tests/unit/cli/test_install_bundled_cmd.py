"""`cxr-screen models install-bundled`: exit 1 with the one line that says why not.

Installing itself is tested in tests/unit/trainer/test_bundled.py and, through `up`,
in tests/integration/service/test_up_bundled.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxr_screen.cli.training_cmd import models_app
from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.tiny_model import register_model


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a migrated SQLite registry and no bundle to install."""
    monkeypatch.chdir(tmp_path)
    for name in ("CXR_BASE_WEIGHTS", "CXR_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'cxr.db'}"
    monkeypatch.setenv("CXR_DATABASE_URL", url)
    monkeypatch.setenv("CXR_BUNDLED_MODEL_DIR", str(tmp_path / "no-bundle"))
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return tmp_path


def test_without_a_bundle_it_exits_1_and_says_so(site: Path) -> None:
    result = CliRunner().invoke(models_app, ["install-bundled"])

    assert result.exit_code == 1, result.output
    assert "no model in service: the bundled default model is not installed" in result.output
    assert "head.keras is absent" in result.output


def test_with_an_active_model_it_exits_1_and_names_it(site: Path) -> None:
    engine = make_engine(f"sqlite:///{site / 'cxr.db'}")
    register_model(make_session_factory(engine), model_dir=site / "models", version="tiny-1")
    engine.dispose()

    result = CliRunner().invoke(models_app, ["install-bundled"])

    assert result.exit_code == 1, result.output
    assert "tiny-1 is the active model" in result.output
