"""Settings: embedded defaults, CXR_* overrides, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CXR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's folder


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings()
    assert settings.storage.database_url == "sqlite:///var/cxr-screen.db"
    assert settings.storage.broker_url.startswith("sqla+sqlite:///var/")
    assert (
        settings.storage.inbox,
        settings.storage.archive,
        settings.storage.quarantine,
        settings.storage.model_dir,
    ) == (
        Path("inbox"),
        Path("archive"),
        Path("quarantine"),
        Path("models"),
    )
    assert settings.training.data_dir is None
    assert settings.training.base_weights == "imagenet"
    assert settings.training.backbone == "vgg16"


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    weights = tmp_path / "base.weights.h5"
    weights.write_bytes(b"x")
    monkeypatch.setenv("CXR_DATABASE_URL", "postgresql+psycopg://u:p@db:5432/cxr")
    monkeypatch.setenv("CXR_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("CXR_INBOX", "/srv/inbox")
    monkeypatch.setenv("CXR_BASE_WEIGHTS", str(weights))
    monkeypatch.setenv("CXR_CHEST_BODY_PARTS", "chest, thorax")
    settings = load_settings()
    assert settings.storage.database_url.startswith("postgresql+psycopg://")
    assert settings.storage.inbox == Path("/srv/inbox")
    assert settings.training.base_weights == str(weights)
    assert settings.decoder.chest_body_parts == ("CHEST", "THORAX")


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CXR_INBOX=/data/dropbox\n")
    assert load_settings().storage.inbox == Path("/data/dropbox")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CXR_DATABASE_URL", "not a url", r"CXR_DATABASE_URL: the value is not a database URL"),
        ("CXR_DATABASE_URL", "mysql://x/y", r"CXR_DATABASE_URL: database 'mysql' is not supp"),
        ("CXR_DATABASE_URL", "postgresql+asyncpg://h/d", r"CXR_DATABASE_URL: .*psycopg"),
        # The scheme only: a broker URL may carry a password, which is never repeated.
        ("CXR_BROKER_URL", "kafka://h", r"CXR_BROKER_URL: scheme 'kafka' is not a supported"),
        ("CXR_BASE_WEIGHTS", "/nowhere.h5", r"CXR_BASE_WEIGHTS: '/nowhere.h5' is neither"),
        ("CXR_MAX_PIXELS", "-3", r"CXR_MAX_PIXELS: .*greater than 0"),
        ("CXR_RETRAIN_CRON", "2am", r"CXR_RETRAIN_CRON: '2am' is not a 5-field cron"),
        ("CXR_BACKBONE", "alexnet", r"CXR_BACKBONE: .*'vgg16'"),
    ],
)
def test_invalid_values_name_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_precision_and_xla_are_checked_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_PRECISION", "half")
    with pytest.raises(SettingsError, match="CXR_PRECISION"):
        load_settings()
    monkeypatch.setenv("CXR_PRECISION", "mixed_bfloat16")
    monkeypatch.setenv("CXR_XLA", "off")
    settings = load_settings()
    assert (settings.screening.precision, settings.screening.xla) == ("mixed_bfloat16", "off")


def test_decode_pool_follows_the_cores_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(32)))
    assert load_settings().screening.decode_pool_size == 16
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})
    assert load_settings().screening.decode_pool_size == 2
    monkeypatch.setenv("CXR_DECODE_THREADS", "6")
    assert load_settings().screening.decode_pool_size == 6
    monkeypatch.setenv("CXR_DECODE_THREADS", "0")
    with pytest.raises(SettingsError, match="CXR_DECODE_THREADS"):
        load_settings()


def test_bad_variables_of_several_subsystems_are_named_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Settings are grouped by subsystem, but one start names every mistake."""
    monkeypatch.setenv("CXR_MAX_PIXELS", "-1")
    monkeypatch.setenv("CXR_BACKBONE", "alexnet")
    monkeypatch.setenv("CXR_DICOM_PORT", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    for variable in ("CXR_MAX_PIXELS", "CXR_BACKBONE", "CXR_DICOM_PORT"):
        assert f"{variable}: " in str(info.value)


def test_flat_names_still_configure_their_subsystem(tmp_path: Path) -> None:
    settings = load_settings(inbox=tmp_path / "in", backbone="VGG19", dicom_port=4242)
    assert settings.storage.inbox == tmp_path / "in"
    assert settings.training.backbone == "vgg19"
    assert settings.pacs.dicom_port == 4242
    copy = settings.model_copy(update={"batch_size": 4})
    assert (copy.screening.batch_size, settings.screening.batch_size) == (4, 16)
