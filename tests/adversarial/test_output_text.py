"""Items 7 and 8: untrusted text is printed inert, and absurd arguments get a clear error."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from db.migrate import upgrade
from db.models import ScanStatus
from db.scans import mark_unscreenable, record_scan
from db.session import make_engine, make_session_factory, session_scope
from tests.cli_runner import run_cli

KEY = "adversarial-test-pseudonym-key-0123"
HOSTILE_NAMES = ["scan[/b].png", "scan[bold red]x[/].png", "\x1b]0;pwned\x07\x1b[2Jscan.png"]
FORMULA = '=HYPERLINK("http://example.invalid","click")'


@pytest.fixture
def hostile_db(database_url: str) -> str:
    """Rows whose source paths and header values were chosen by an attacker."""
    engine = make_engine(database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        for number, name in enumerate([*HOSTILE_NAMES, FORMULA + ".png"]):
            scan, _ = record_scan(
                session, sha256=f"{number:064x}", source_path=f"/in/{name}", size_bytes=1
            )
            mark_unscreenable(
                session,
                scan_id=scan.id,
                status=ScanStatus.REJECTED,
                code="not_a_chest",
                error=f"{name}: Body Part Examined is '[/B]'",
                stored_path=None,
                header={"body_part": "[/B]"},
            )
    engine.dispose()
    return database_url


def test_item7_results_prints_hostile_names_and_values_as_text(
    hostile_db: str, tmp_path: Path
) -> None:
    env = {"CXR_DATABASE_URL": hostile_db, "CXR_PSEUDONYM_KEY": KEY}
    table = run_cli("results", "--limit", "0", cwd=tmp_path, env=env)
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout
    assert "\x07" not in table.stdout
    assert "[/b]" in table.stdout, "markup shown as typed"
    assert "\\x1b" in table.stdout, "the escape shown escaped"

    out = run_cli("results", "--format", "csv", "--limit", "0", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    cells = [cell for row in csv.reader(io.StringIO(out.stdout)) for cell in row]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells), "no formula cell"
    assert any(c.startswith("'=HYPERLINK") or "=HYPERLINK" in c for c in cells)


def test_item7_inspect_shows_hostile_header_values_and_names_as_text(
    dicom_dir: Path, tmp_path: Path
) -> None:
    ds = dcmread(dicom_dir / "cr_chest_sc_jpeg_baseline.dcm")
    ds.BodyPartExamined = "[/B]"
    target = tmp_path / "\x1b[2Jscan[" / "b].dcm"  # shown as `...scan[/b].dcm`
    target.parent.mkdir()
    ds.save_as(target)
    shutil.copyfile(target, tmp_path / "plain.dcm")
    out = run_cli(
        "inspect", str(target), str(tmp_path / "plain.dcm"), cwd=tmp_path,
        env={"CXR_PSEUDONYM_KEY": KEY},
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    assert "Traceback" not in out.stderr
    assert "[/B]" in out.stdout
    assert "\x1b" not in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "99999999999d"],
        ["--since", "999999999d"],
        ["--until", "99999999999w"],
        ["--limit", "99999999999999999999"],
        ["--limit", "-1"],
    ],
)
def test_item8_absurd_arguments_get_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    env = {"CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "CXR_PSEUDONYM_KEY": KEY}
    out = run_cli("results", *args, cwd=tmp_path, env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert args[0] in out.stderr
