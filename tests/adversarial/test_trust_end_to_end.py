"""Items 1-3 end to end: `cxr-screen up` and `cxr-screen receive` as real processes, DCMTK's
storescu as the PACS, real files; the invariants are checked at the end."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import create_engine, func, select, text

from db.migrate import upgrade
from db.models import Duplicate, Scan
from db.session import make_engine, make_session_factory
from tests.cli_runner import run_cli
from tests.conftest import fresh_database
from tests.integration.pacs.conftest import (
    RECEIVER_AE,
    SENDER_AE,
    dicom_tool,
    receiver_env,
    storescu_profile,
)
from tests.invariants import assert_invariants, sha256_of, tree_digest
from tests.processes import Service, free_port, wait_until
from tests.tiny_model import register_model
from worker.filing import Filing

pytestmark = pytest.mark.integration
FINAL = {"done", "rejected", "failed"}
FAST = {
    "CXR_STABLE_SECONDS": "0.5",
    "CXR_BATCH_WAIT_MS": "200",
    "CXR_PSEUDONYM_KEY": "adversarial-test-pseudonym-key-0123",
    "CXR_RECONCILE_INTERVAL_S": "2",
    "CXR_REQUEUE_AFTER_S": "4",
}


def _results(home: Path, env: dict[str, str]) -> list[dict[str, object]]:
    out = run_cli("results", "--format", "jsonl", "--limit", "0", cwd=home, env=env)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _storescu(files: list[Path], port: int, tmp_path: Path) -> None:
    config, profile = storescu_profile(files, tmp_path / "storescu.cfg")
    sent = subprocess.run(
        [
            dicom_tool("storescu", "dcmtk"),
            "--config-file", str(config), profile,
            "--aetitle", SENDER_AE, "--call", RECEIVER_AE,
            "127.0.0.1", str(port), *map(str, files),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def _filing(home: Path) -> Filing:
    return Filing(inbox=home / "inbox", archive=home / "archive", quarantine=home / "quarantine")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], Service, int]]:
    """`up` and `receive` in one site folder (embedded defaults), no model active yet."""
    home = tmp_path / "site"
    home.mkdir()
    engine = make_engine(f"sqlite:///{home / 'var' / 'cxr-screen.db'}")
    upgrade(engine)
    engine.dispose()
    port = free_port()
    # No base weights, so the bundled default model cannot go in service: no model is
    # active until the test registers one, with or without internet.
    env = {**FAST, **receiver_env(home / "inbox", port, SENDER_AE), "CXR_BASE_WEIGHTS": "none"}
    up = Service(["up"], cwd=home, env=env, log=tmp_path / "up.log")
    receive = Service(["receive"], cwd=home, env=env, log=tmp_path / "receive.log")
    try:
        up.wait_for_log("ready.", timeout=120)
        receive.wait_for_log("receiving DICOM as", timeout=60)
        yield home, env, up, port
    finally:
        assert receive.stop(timeout=30) == 0, receive.output()[-2000:]
        assert up.stop(timeout=90) == 0, up.output()[-3000:]


def test_items_1_2_swapped_content_and_swapped_folders_never_get_a_verdict(
    site: tuple[Path, dict[str, str], Service, int], dicom_dir: Path, shared_data: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    home, env, _up, port = site
    inbox = home / "inbox"
    jpegs = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:3]

    # 1. A PACS sends an instance, then a corrected re-send with the same UIDs.
    first = dicom_dir / "dx_chest_pa_mono1_inverse_plut_j2k.dcm"
    corrected = tmp_path / "corrected.dcm"
    original = dcmread(first)
    other = dcmread(dicom_dir / "cr_chest_pa_mono1_j2k_lossless.dcm")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(other, keyword, getattr(original, keyword))
    other.file_meta.MediaStorageSOPInstanceUID = original.SOPInstanceUID
    other.save_as(corrected, enforce_file_format=True)
    study_folder = inbox / str(original.StudyInstanceUID)
    _storescu([first], port, tmp_path)
    wait_until(lambda: len(_results(home, env)) == 1, timeout=60, what="the first instance")
    # As received (storescu pads odd-length values): what the scan's hash is of.
    [received_first] = [p.read_bytes() for p in study_folder.glob("*.dcm")]
    _storescu([corrected], port, tmp_path)
    wait_until(lambda: len(_results(home, env)) == 2, timeout=60, what="the re-send")
    [received_second] = [
        p.read_bytes() for p in study_folder.glob("*.dcm") if p.read_bytes() != received_first
    ]
    assert len(list(study_folder.glob("*.dcm"))) == 2, "kept beside, not over, the first"

    # 1b. A sender rewrites a queued JPEG in place with other bytes.
    rewritten = inbox / "x.jpeg"
    shutil.copyfile(jpegs[0], rewritten)
    wait_until(lambda: len(_results(home, env)) == 3, timeout=60, what="x.jpeg")
    with rewritten.open("r+b") as handle:
        handle.truncate(0)
        handle.write(jpegs[1].read_bytes())
    wait_until(lambda: len(_results(home, env)) == 4, timeout=60, what="x.jpeg's new content")

    # 2. A folder of the inbox is replaced by a symlink to a folder outside.
    study = inbox / "study"
    study.mkdir()
    shutil.copyfile(jpegs[2], study / "model.keras")
    wait_until(lambda: len(_results(home, env)) == 5, timeout=60, what="study/model.keras")
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.copyfile(jpegs[2], victim / "model.keras")
    before = tree_digest(victim)
    study.rename(tmp_path / "stash")
    study.symlink_to(victim, target_is_directory=True)

    # Only now is a model active: every scan above is screened from here on.
    factory = make_session_factory(make_engine(f"sqlite:///{home / 'var' / 'cxr-screen.db'}"))
    register_model(factory, model_dir=home / "models", version="tiny-1")

    def final() -> bool:
        rows = _results(home, env)
        return len(rows) == 5 and all(r["status"] in FINAL for r in rows)

    wait_until(final, timeout=180, what="five final results", interval=1.0)
    rows = _results(home, env)
    by_sha = {str(r["sha256"]): r for r in rows}
    a = by_sha[hashlib.sha256(received_first).hexdigest()]
    b = by_sha[hashlib.sha256(received_second).hexdigest()]
    assert (a["status"], b["status"]) == ("done", "done"), (a, b)
    assert sha256_of(Path(str(a["stored_path"]))) == a["sha256"]
    assert sha256_of(Path(str(b["stored_path"]))) == b["sha256"]
    x_old, x_new = by_sha[sha256_of(jpegs[0])], by_sha[sha256_of(jpegs[1])]
    assert x_old["status"] == "failed"
    assert x_old["error_code"] in ("content_changed", "unreadable"), x_old
    assert x_old["label"] is None, "no verdict on bytes that are not the scan's"
    assert x_new["status"] == "done"
    swapped = by_sha[sha256_of(jpegs[2])]
    assert (swapped["status"], swapped["error_code"]) == ("failed", "outside_folders"), swapped
    assert swapped["label"] is None

    # 3. The PACS re-sends the first instance byte for byte: a duplicate, not a new scan.
    _storescu([first], port, tmp_path)

    def recorded_duplicate() -> bool:
        with factory() as session:
            return session.scalar(select(func.count()).select_from(Duplicate)) == 1

    wait_until(recorded_duplicate, timeout=60, what="the identical re-send as a duplicate")
    assert len(_results(home, env)) == 5, "an identical re-send is not screened twice"
    assert_invariants(
        factory,
        _filing(home),
        dropped=[received_first, received_second, jpegs[1].read_bytes()],
        # The test itself destroyed x.jpeg's first content and moved study/ away.
        allow_unkept={sha256_of(jpegs[0]), sha256_of(jpegs[2])},
        outside={victim: before},
    )


@pytest.mark.parametrize("kind", ["postgresql"])
def test_item3_a_database_outage_between_quarantine_and_commit_is_retried_to_the_file(
    kind: str, dicom_dir: Path, tmp_path: Path
) -> None:
    """PostgreSQL refuses the first "rejected" update with an outage error (SQLSTATE 57P01,
    admin shutdown) after the worker moved the file to the quarantine; the retry finds it."""
    home = tmp_path / "site"
    home.mkdir()
    with fresh_database(kind, tmp_path) as url:
        engine = make_engine(url)
        upgrade(engine)
        register_model(make_session_factory(engine), model_dir=home / "models", version="tiny-1")
        engine.dispose()
        admin = create_engine(url)
        with admin.begin() as conn:
            conn.execute(text("CREATE SEQUENCE outage_once"))
            conn.execute(
                text(
                    """
                    CREATE FUNCTION outage_once() RETURNS trigger AS $$
                    BEGIN
                      IF NEW.status = 'rejected' AND nextval('outage_once') = 1 THEN
                        RAISE EXCEPTION 'terminating connection due to administrator command'
                          USING ERRCODE = '57P01';
                      END IF;
                      RETURN NEW;
                    END $$ LANGUAGE plpgsql
                    """
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER outage_once BEFORE UPDATE ON scans "
                    "FOR EACH ROW EXECUTE FUNCTION outage_once()"
                )
            )
        admin.dispose()
        env = {**FAST, "CXR_DATABASE_URL": url}
        up = Service(["up"], cwd=home, env=env, log=tmp_path / "up.log")
        try:
            up.wait_for_log("ready.", timeout=120)
            hip = dicom_dir / "cr_hip_jpeg_lossless.dcm"
            shutil.copyfile(hip, home / "inbox" / hip.name)

            def final() -> bool:
                rows = _results(home, env)
                return len(rows) == 1 and rows[0]["status"] in FINAL

            wait_until(final, timeout=120, what="the hip's result", interval=1.0)
            [row] = _results(home, env)
        finally:
            assert up.stop(timeout=90) == 0, up.output()[-3000:]
        assert "database unavailable" in up.output(), "the outage happened, and was retried"
        assert (row["status"], row["error_code"]) == ("rejected", "not_a_chest"), row
        stored = Path(str(row["stored_path"]))
        assert stored.is_relative_to(home / "quarantine")
        assert sha256_of(stored) == row["sha256"]
        assert row["attempts"] == 1, "the outage spent no attempt"
        assert_invariants(url, _filing(home), dropped=[hip.read_bytes()])
        engine = make_engine(url)
        with make_session_factory(engine)() as session:
            assert session.scalar(select(func.count()).select_from(Scan)) == 1
        engine.dispose()
