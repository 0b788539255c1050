"""Items 12, 13 and 15: keys that cannot be guessed, secrets never printed, private files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydicom import dcmread

from cxr_screen.cli.common import redacted, scrubbed
from tests.cli_runner import run_cli
from worker.imaging.pseudonym import KEY_FILE_NAME, load_or_create_key, patient_ref


@pytest.mark.parametrize("key", ["", "short-key", "0123456789", "x" * 31])
def test_item12_a_short_or_empty_pseudonym_key_is_refused(key: str, tmp_path: Path) -> None:
    out = run_cli(
        "check", cwd=tmp_path, env={"CXR_PSEUDONYM_KEY": key, "CXR_DATABASE_URL": "sqlite:///x.db"}
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "CXR_PSEUDONYM_KEY" in out.stderr
    assert "shorter than 32" in out.stderr
    assert "Traceback" not in out.stderr


def test_item12_inspect_never_creates_a_key_file(dicom_dir: Path, tmp_path: Path) -> None:
    out = run_cli("inspect", str(dicom_dir / "cr_chest_sc_jpeg_baseline.dcm"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "var").exists(), "no key written in the directory it ran from"
    assert "throw-away key" in out.stderr


def test_item12_inspect_uses_the_services_key_and_a_throw_away_one_otherwise(
    dicom_dir: Path, tmp_path: Path
) -> None:
    """With the service's var/pseudonym.key, inspect's patient refs are the service's."""
    ds = dcmread(dicom_dir / "cr_chest_sc_jpeg_baseline.dcm")
    ds.PatientID, ds.IssuerOfPatientID = "PAT-0042", "HOSP"
    scan = tmp_path / "scan.dcm"
    ds.save_as(scan)

    def inspected_ref(cwd: Path) -> str:
        out = run_cli("inspect", "--format", "json", str(scan), cwd=cwd)
        assert out.returncode == 0, out.stderr
        (finding,) = json.loads(out.stdout)
        ref = finding["metadata"]["patient_ref"]
        assert isinstance(ref, str)
        return ref

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    first, second = inspected_ref(empty), inspected_ref(empty)
    assert first != second, "a throw-away key each time, never written down"
    assert list(empty.iterdir()) == []

    service = tmp_path / "service"
    key = load_or_create_key(service / "var" / KEY_FILE_NAME)  # as the worker does
    assert inspected_ref(service) == patient_ref(key, "PAT-0042", "HOSP")
    assert sorted(p.name for p in (service / "var").iterdir()) == [KEY_FILE_NAME]


@pytest.mark.parametrize("size", [0, 16, 31])
def test_item12_inspect_refuses_a_short_key_file_in_one_line(size: int, tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / KEY_FILE_NAME).write_bytes(b"k" * size)
    out = run_cli("inspect", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert f"holds {size} bytes, too short for a pseudonym key (at least 32)" in line
    assert (tmp_path / "var" / KEY_FILE_NAME).read_bytes() == b"k" * size, "left as it was"


def test_item12_a_short_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(b"x" * 16)
    with pytest.raises(ValueError, match="too short"):
        load_or_create_key(path)
    fresh = tmp_path / "new" / "pseudonym.key"
    assert len(load_or_create_key(fresh)) >= 32
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_item13_a_bad_broker_url_never_repeats_its_password(tmp_path: Path) -> None:
    out = run_cli(
        "check",
        cwd=tmp_path,
        env={
            "CXR_BROKER_URL": "redis//:s3cr3t-pass@host:6379/0",
            "CXR_DATABASE_URL": "sqlite:///x.db",
        },
    )
    assert out.returncode == 2
    assert "CXR_BROKER_URL" in out.stderr
    assert "s3cr3t-pass" not in out.stderr + out.stdout


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        # A port that is not a number: SQLAlchemy's URL parser raised, a traceback.
        ("redis://:s3cr3t-pass@127.0.0.1:notaport/0", "s3cr3t-pass"),
        # An unescaped `@` in the password: a parser that splits at the first `@` showed
        # the rest of the password as the host.
        ("redis://:s3cr3t@pass@127.0.0.1:1/0", "pass@"),
        ("amqp://cxr:s3cr3t/pass@127.0.0.1:1//", "s3cr3t"),
    ],
)
def test_item13_check_never_prints_a_broker_password(url: str, secret: str, tmp_path: Path) -> None:
    out = run_cli(
        "check",
        cwd=tmp_path,
        env={"CXR_BROKER_URL": url, "CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
        timeout=60,
    )
    assert out.returncode == 1, (out.stdout, out.stderr)  # the broker check fails
    assert "Traceback" not in out.stderr
    (broker,) = [line for line in out.stderr.splitlines() if " broker " in line]
    assert broker.startswith("FAIL broker")
    assert ":***@127.0.0.1" in broker
    assert secret not in out.stdout + out.stderr


def test_item13_a_malformed_database_url_never_repeats_its_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg//cxr:s3cr3t-pass@db-host:5432/cxr"  # the `:` of `://` missing
    out = run_cli("check", cwd=tmp_path, env={"CXR_DATABASE_URL": url})
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "CXR_DATABASE_URL" in out.stderr
    assert "s3cr3t-pass" not in out.stdout + out.stderr


def test_item13_a_password_in_the_database_query_is_not_printed(tmp_path: Path) -> None:
    url = "postgresql+psycopg://cxr@127.0.0.1:1/none?password=hunter2-secret"
    for command in ("results", "check"):
        out = run_cli(command, cwd=tmp_path, env={"CXR_DATABASE_URL": url}, timeout=60)
        assert out.returncode in (1, 2), (out.stdout, out.stderr)
        assert "hunter2-secret" not in out.stdout + out.stderr, command
        assert "password=***" in out.stdout + out.stderr, command


def test_item15_databases_and_filed_files_are_not_world_readable(
    tmp_path: Path, dicom_dir: Path
) -> None:
    old = os.umask(0o022)  # a usual login shell
    try:
        env = {"CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'cxr.db'}"}
        out = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    database = tmp_path / "var" / "cxr.db"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    for side in ("-wal", "-shm"):
        extra = database.with_name(database.name + side)
        if extra.exists():
            assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) & 0o007 == 0, "umask 027 applies"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://:s3cret@host:notaport/0", "redis://:***@host:notaport/0"),
        ("redis://:s3c@ret@redis/0", "redis://:***@redis/0"),
        ("amqp://cxr:pa/ss@rabbit//", "amqp://cxr:***@rabbit//"),
        ("postgresql+psycopg://cxr@db/cxr?password=pw&sslmode=require",
         "postgresql+psycopg://cxr@db/cxr?password=***&sslmode=require"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/none", "postgresql+psycopg://postgres@127.0.0.1:1/none"),
        ("sqla+sqlite:///var/broker.db", "sqla+sqlite:///var/broker.db"),
        ("redis//:s3cret@host", "(not a URL)"),
    ],
)  # fmt: skip
def test_item13_redacted_hides_the_password_of_any_url(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_item13_scrubbed_removes_the_password_and_its_pieces_from_a_message() -> None:
    url = "amqp://cxr:s3cr3t/pa55@rabbit:5672//"
    message = f"Port could not be cast to integer value as 's3cr3t'; url {url}; pa55"
    cleaned = scrubbed(message, url)
    assert "s3cr3t" not in cleaned
    assert "pa55" not in cleaned
    assert "amqp://cxr:***@rabbit:5672//" in cleaned
