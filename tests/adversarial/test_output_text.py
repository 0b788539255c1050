"""Item 7: untrusted text (file names, header values) is printed as inert text, everywhere."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from cxr_screen.cli.output import csv_cell, inert, printable
from db.migrate import upgrade
from db.models import ScanStatus
from db.scans import mark_unscreenable, record_scan
from db.session import make_engine, make_session_factory, session_scope
from tests.cli_runner import run_cli
from tests.tiny_model import register_model

KEY = "adversarial-test-pseudonym-key-0123"
HOSTILE_NAMES = ["scan[/b].png", "scan[bold red]x[/].png", "\x1b]0;pwned\x07\x1b[2Jscan.png"]
FORMULA = '=HYPERLINK("http://example.invalid","click")'
# Real chest X-rays dropped under paths an attacker chose: rich markup that closes a tag
# nobody opened (a MarkupError; the `/` makes `scan[` a folder), escape sequences that
# retitle (OSC) or clear (CSI) the terminal, the 8-bit CSI, a right-to-left override that
# makes `gnp.exe` read `exe.png`, and cells that a spreadsheet runs as formulas.
HOSTILE_FILES = [
    "scan[/b].png",
    "scan[bold red]x[/].png",
    "\x1b]0;pwned\x07\x1b[2Jscan.png",
    "csi\x9b31mred.png",
    "scan\u202egnp.exe.png",
    '=HYPERLINK("https:example.invalid","click").png',
    "+1+2.png",
    "-2+3.png",
    "@SUM(1).png",
    "\tTAB.png",
]
# Real DICOMs whose Body Part Examined closes a rich tag: rejected, with the value quoted
# in the error (and a formula at the start of it).
HOSTILE_DICOMS = ['=HYPERLINK("https:example.invalid","x").dcm', "\x1b[2J[B].dcm"]
# What must never reach a terminal: C0 (but tab and newline), DEL, C1, bidi controls.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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


@pytest.fixture
def hostile_folder(shared_data: Path, tmp_path: Path) -> Path:
    """Copies of real files under hostile names, each file different (its own scan)."""
    folder = tmp_path / "dropped"
    folder.mkdir()
    jpegs = sorted((shared_data / "chest_xray" / "val" / "NORMAL").glob("*.jpeg"))
    for name, source in zip(HOSTILE_FILES, jpegs, strict=False):
        (folder / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(source, folder / name)
    for number, name in enumerate(HOSTILE_DICOMS):
        ds = dcmread(shared_data / "dicom" / "cr_chest_sc_jpeg_baseline.dcm")
        ds.BodyPartExamined = "[/B]"
        ds.SeriesDescription = f"copy {number}"  # other bytes: a scan of its own
        ds.save_as(folder / name)
    return folder


def _assert_inert(text: str) -> None:
    found = RAW_CONTROL.search(text)
    if found is not None:
        context = text[max(0, found.start() - 80) : found.end() + 20]
        pytest.fail(f"a raw control character reached the output: {context!r}")


def _assert_no_formula(csv_text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(FORMULA_START), f"{column} runs as a formula: {cell!r}"
    return rows


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


def test_item7_screen_and_results_on_real_files_with_hostile_names(
    database_url: str, hostile_folder: Path, tmp_path: Path
) -> None:
    """Real scans screened under hostile names: every output of both commands is text."""
    engine = make_engine(database_url)
    upgrade(engine)
    register_model(make_session_factory(engine), model_dir=tmp_path / "models", version="tiny-1")
    engine.dispose()
    env = {"CXR_DATABASE_URL": database_url, "CXR_PSEUDONYM_KEY": KEY}

    screened = run_cli("screen", str(hostile_folder), cwd=tmp_path, env=env, timeout=300)
    assert screened.returncode == 0, screened.stderr
    assert "Traceback" not in screened.stderr
    _assert_inert(screened.stdout)

    table = run_cli("results", "--limit", "0", cwd=tmp_path, env={**env, "COLUMNS": "400"})
    assert table.returncode == 0, table.stderr
    _assert_inert(table.stdout + table.stderr)
    shown = "".join(table.stdout.split())  # the table folds long cells
    for visible in ("scan[/b].png", "scan[boldred]x[/].png", "\\x1b]0;pwned\\x07", "\\x9b31m"):
        assert visible in shown, f"{visible} shown as typed"
    assert "scan\\u202egnp.exe.png" in shown, "the right-to-left override shown escaped"
    assert "'[/B]'" in shown, "the header value quoted in the error, as typed"

    out = run_cli("results", "--format", "csv", "--limit", "0", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    _assert_inert(out.stdout)
    rows = _assert_no_formula(out.stdout)
    assert len(rows) == len(HOSTILE_FILES) + len(HOSTILE_DICOMS)
    errors = [row["error"] for row in rows if row["status"] == "rejected"]
    assert sorted(e.split(":")[0] for e in errors) == sorted(
        ["'=HYPERLINK(\"https", "\\x1b[2J[B].dcm"]
    ), errors

    lines = run_cli("results", "--format", "jsonl", "--limit", "0", cwd=tmp_path, env=env)
    assert lines.returncode == 0, lines.stderr
    _assert_inert(lines.stdout)
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    # JSON keeps the exact names: a script gets the file's real path back.
    names = sorted(str(Path(r["source_path"]).relative_to(hostile_folder)) for r in records)
    assert names == sorted(HOSTILE_FILES + HOSTILE_DICOMS)
    assert {r["status"] for r in records} == {"done", "rejected"}


def test_item7_screen_without_recording_neutralises_relative_names(
    hostile_folder: Path, tmp_path: Path
) -> None:
    """`screen --no-record` prints the names as given: `=HYPERLINK(...)` leads its cell."""
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(database)
    upgrade(engine)
    register_model(make_session_factory(engine), model_dir=tmp_path / "models", version="tiny-1")
    engine.dispose()
    env = {
        "CXR_DATABASE_URL": database,
        "CXR_PSEUDONYM_KEY": KEY,
        "CXR_MODEL_DIR": str(tmp_path / "models"),
    }
    # Run from the folder, naming it `.`: the source paths are the bare hostile names.
    out = run_cli(
        "screen", ".", "--no-record", "--format", "csv", cwd=hostile_folder, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    _assert_inert(out.stdout)
    rows = _assert_no_formula(out.stdout)
    paths = {row["source_path"] for row in rows}
    assert '\'=HYPERLINK("https:example.invalid","click").png' in paths
    assert {"'+1+2.png", "'-2+3.png", "'@SUM(1).png"} <= paths
    assert "'\tTAB.png" in paths, "tab kept, behind the quote"


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


def test_item7_inspect_table_and_json_on_real_files_with_hostile_names(
    hostile_folder: Path, tmp_path: Path
) -> None:
    """Both formats of `inspect`: the table escapes, the JSON keeps values exact."""
    env = {"CXR_PSEUDONYM_KEY": KEY, "COLUMNS": "400"}
    table = run_cli("inspect", str(hostile_folder), cwd=tmp_path, env=env)
    assert table.returncode == 1, table.stderr  # the two [/B] DICOMs are not a chest
    assert "Traceback" not in table.stderr
    _assert_inert(table.stdout + table.stderr)
    shown = "".join(table.stdout.split())
    for visible in ("scan[/b].png", "[/B]", "\\x1b[2J"):
        assert visible in shown

    out = run_cli("inspect", "--format", "json", str(hostile_folder), cwd=tmp_path, env=env)
    assert out.returncode == 1, out.stderr
    _assert_inert(out.stdout)
    findings = json.loads(out.stdout)
    names = sorted(str(Path(f["path"]).relative_to(hostile_folder)) for f in findings)
    assert names == sorted(HOSTILE_FILES + HOSTILE_DICOMS), "JSON keeps the exact names"
    rejected = [f for f in findings if f["outcome"] == "rejected"]
    assert {f["metadata"]["body_part"] for f in rejected} == {"[/B]"}


def test_item7_errors_quoting_a_hostile_name_are_one_printable_line(tmp_path: Path) -> None:
    """A command's one-line error quotes the path it was given: escaped, one line."""
    name = tmp_path / "\x1b]0;pwned\x07\nscan[/b].dcm"
    env = {"CXR_PSEUDONYM_KEY": KEY, "CXR_DATABASE_URL": f"sqlite:///{tmp_path / 'db'}"}
    out = run_cli("screen", str(name), cwd=tmp_path, env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    _assert_inert(out.stderr)
    (line,) = out.stderr.strip().splitlines()
    assert "\\x1b]0;pwned\\x07\\nscan[/b].dcm" in line


def test_item7_log_lines_quote_hostile_names_escaped(dicom_dir: Path, tmp_path: Path) -> None:
    """The warning a rejected scan logs names its file: escaped, as in the table."""
    folder = tmp_path / "dropped"
    folder.mkdir()
    ds = dcmread(dicom_dir / "cr_chest_sc_jpeg_baseline.dcm")
    ds.BodyPartExamined = "HIP"
    ds.save_as(folder / "\x1b]0;pwned\x07\x1b[2Jhip.dcm")
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(database)
    upgrade(engine)
    register_model(make_session_factory(engine), model_dir=tmp_path / "models", version="tiny-1")
    engine.dispose()
    env = {"CXR_DATABASE_URL": database, "CXR_PSEUDONYM_KEY": KEY}
    out = run_cli("screen", str(folder), cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "not a chest" in out.stderr, "the rejection is logged"
    _assert_inert(out.stderr)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x9b2J", "\\x9b2J"),
        ("a\x7fb\x00c", "a\\x7fb\\x00c"),
        ("scan\u202egnp.exe", "scan\\u202egnp.exe"),
        ("not utf-8 \udcff", "not utf-8 \\udcff"),
        ("tab\tand\nnewline stay", "tab\tand\nnewline stay"),
        ("[/b] é ü 中", "[/b] é ü 中"),
    ],
)
def test_item7_printable_escapes_only_what_a_terminal_would_act_on(value: str, shown: str) -> None:
    assert printable(value) == shown
    assert inert(value).plain == shown, "a rich Text: markup stays as typed"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1", "'+1"),
        ("-1+2", "'-1+2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\\r=1"),
        ("/in/=x.png", "/in/=x.png"),
        (-0.5, -0.5),
        (3, 3),
        (None, ""),
    ],
)
def test_item7_csv_cells_never_start_a_formula(value: object, cell: object) -> None:
    assert csv_cell(value) == cell
