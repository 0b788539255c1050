"""`cxr-screen screen`: one-shot screening of files and folders, recorded or not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import func, select

from db.migrate import upgrade
from db.models import Scan
from db.session import make_engine, make_session_factory
from tests.cli_runner import run_cli
from tests.tiny_model import register_model


def _folder(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "to-screen"
    (folder / "sub").mkdir(parents=True)
    for src in sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:3]:
        shutil.copy(src, folder / src.name)
    shutil.copy(shared_data / "dicom" / "cr_hip_jpeg_lossless.dcm", folder / "sub" / "hip.dcm")
    (folder / ".hidden.part").write_bytes(b"still copying")
    return folder


def test_screen_records_results_and_prints_them(
    database_url: str, shared_data: Path, tmp_path: Path
) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    register_model(factory, model_dir=tmp_path / "models", version="tiny-1")
    folder = _folder(shared_data, tmp_path)
    env = {
        "CXR_DATABASE_URL": database_url,
        "CXR_PSEUDONYM_KEY": "test-pseudonym-key-0123456789abcdef",
    }

    out = run_cli("screen", str(folder), "--format", "jsonl", cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 4, "three JPEGs and the hip; the hidden partial file is skipped"
    by_name = {Path(r["source_path"]).name: r for r in rows}
    assert by_name["hip.dcm"]["status"] == "rejected"
    assert "not a chest" in by_name["hip.dcm"]["error"]
    for name, row in by_name.items():
        if name != "hip.dcm":
            assert row["status"] == "done"
            assert row["label"] in ("NORMAL", "PNEUMONIA")
            assert row["model_version"] == "tiny-1"
    assert all(Path(folder, n).exists() or Path(folder, "sub", n).exists() for n in by_name)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Scan)) == 4

    listed = run_cli("results", "--format", "jsonl", cwd=tmp_path, env=env)
    assert len(listed.stdout.splitlines()) == 4
    engine.dispose()


def test_no_record_writes_nothing(database_url: str, shared_data: Path, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    register_model(factory, model_dir=tmp_path / "models", version="tiny-1")
    folder = _folder(shared_data, tmp_path)
    env = {
        "CXR_DATABASE_URL": database_url,
        "CXR_PSEUDONYM_KEY": "test-pseudonym-key-0123456789abcdef",
    }
    out = run_cli(
        "screen", str(folder), "--no-record", "--format", "csv", cwd=tmp_path, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 5  # header + 4 files
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Scan)) == 0
    engine.dispose()


def test_without_a_model_says_how_to_get_one(tmp_path: Path) -> None:
    assert run_cli("db", "upgrade", cwd=tmp_path).returncode == 0
    (tmp_path / "x.jpeg").write_bytes(b"\xff\xd8\xff")
    out = run_cli("screen", "x.jpeg", cwd=tmp_path)
    assert out.returncode == 2
    assert "no model is active yet: train one with `cxr-screen train`" in out.stderr
