"""`cxr-screen db upgrade` and `cxr-screen results` as a person runs them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from db.models import ScanStatus
from db.session import make_engine, make_session_factory, session_scope
from tests.cli_runner import run_cli
from tests.factories import add_model_version, add_prediction, add_scan, hours_ago


def _seed(database_url: str) -> None:
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as session:
        model = add_model_version(session, version="2026.11.28-vgg16", threshold=0.4)
        done = add_scan(
            session, status=ScanStatus.DONE, source_path="inbox/a.dcm", received_at=hours_ago(2)
        )
        add_prediction(session, scan=done, model=model, probability=0.93)
        add_scan(
            session,
            status=ScanStatus.REJECTED,
            source_path="inbox/hip.dcm",
            error="hip.dcm: Body Part Examined is 'HIP', not a chest",
            error_code="not_a_chest",
            received_at=hours_ago(1),
        )
    engine.dispose()


def test_upgrade_then_results_as_csv_and_jsonl(database_url: str, tmp_path: Path) -> None:
    env = {"CXR_DATABASE_URL": database_url}
    first = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "upgraded from empty to" in first.stdout
    again = run_cli("db", "upgrade", cwd=tmp_path, env=env)
    assert "already at revision" in again.stdout
    _seed(database_url)

    out = run_cli("results", "--format", "csv", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["source_path"] for r in rows] == ["inbox/hip.dcm", "inbox/a.dcm"]
    assert rows[1]["label"] == "PNEUMONIA"
    assert rows[1]["model_version"] == "2026.11.28-vgg16"
    assert rows[0]["status"] == "rejected"
    assert rows[0]["error_code"] == "not_a_chest"

    out = run_cli("results", "--format", "jsonl", "--label", "PNEUMONIA", cwd=tmp_path, env=env)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 1
    record = records[0]
    for field in (
        "scan_id",
        "sha256",
        "source_path",
        "status",
        "error",
        "label",
        "probability",
        "model_version",
        "received_at",
        "finished_at",
        "predicted_at",
        "inference_precision",
    ):
        assert field in record
    assert record["probability"] == 0.93
    assert record["received_at"].endswith("+00:00")

    table = run_cli("results", "--status", "rejected", cwd=tmp_path, env=env)
    assert table.returncode == 0
    assert "hip.dcm" in table.stdout
    assert "a.dcm" not in table.stdout.replace("hip.dcm", "")


def test_default_database_is_sqlite_under_var(tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "cxr-screen.db").is_file()
    empty = run_cli("results", "--format", "csv", cwd=tmp_path)
    assert empty.stdout.splitlines()[0].startswith("scan_id,sha256,source_path")


def test_wrong_database_url_is_one_clear_line(tmp_path: Path) -> None:
    for url, expected in [
        ("postgres-ish://nope", "CXR_DATABASE_URL"),
        (
            "postgresql+psycopg://postgres@127.0.0.1:1/none",
            "cannot use the database at "
            "CXR_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:1/none",
        ),
    ]:
        result = run_cli("results", cwd=tmp_path, env={"CXR_DATABASE_URL": url})
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0]
        assert "Traceback" not in result.stderr


def test_results_on_a_database_without_schema_says_to_upgrade(tmp_path: Path) -> None:
    result = run_cli(
        "results", cwd=tmp_path, env={"CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    )
    assert result.returncode == 2
    assert "run `cxr-screen db upgrade` first" in result.stderr


def test_password_never_printed(tmp_path: Path) -> None:
    url = "postgresql+psycopg://cxr:s3cret@127.0.0.1:1/none"
    result = run_cli("results", cwd=tmp_path, env={"CXR_DATABASE_URL": url})
    assert result.returncode == 2
    assert "s3cret" not in result.stderr
    assert "***" in result.stderr


def test_the_widest_accepted_arguments_work_on_the_database(
    database_url: str, tmp_path: Path
) -> None:
    """The largest --limit and the calendar's ends are accepted: each database takes them."""
    env = {"CXR_DATABASE_URL": database_url}
    assert run_cli("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    _seed(database_url)
    out = run_cli(
        "results", "--format", "jsonl", "--limit", str(2**63 - 1),
        "--since", "0001-01-01", "--until", "9999-12-31T23:59:59", "--min-probability", "0",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["source_path"] for line in out.stdout.splitlines()] == ["inbox/a.dcm"]
    out = run_cli("results", "--format", "jsonl", "--since", "520w", cwd=tmp_path, env=env)
    assert len(out.stdout.splitlines()) == 2
