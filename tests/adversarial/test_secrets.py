"""Items 12, 13 and 15: keys that cannot be guessed, secrets never printed, private files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from worker.imaging.pseudonym import load_or_create_key


@pytest.mark.parametrize("key", ["", "short-key"])
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
