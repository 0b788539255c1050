"""End to end: `cxr-screen up`, real files dropped into the inbox, results (in the database
and on the web pages), clean stop."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.cli_runner import run_cli
from tests.conftest import fresh_database
from tests.invariants import assert_invariants, tree_digest
from tests.processes import RedisServer, Service, free_port, wait_until
from tests.tiny_model import register_model
from worker.filing import Filing

pytestmark = pytest.mark.integration
FINAL = {"done", "rejected", "failed"}
FAST = {
    "CXR_STABLE_SECONDS": "0.5",
    "CXR_BATCH_WAIT_MS": "200",
    "CXR_PSEUDONYM_KEY": "test-pseudonym-key-0123456789abcdef",
    "CXR_RECONCILE_INTERVAL_S": "2",
    "CXR_REQUEUE_AFTER_S": "10",
}
WEB_PASSWORD = "shared password for the test"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(params=["embedded", "redis+postgresql"])
def service_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Settings of one deployment: the embedded defaults, or Redis + PostgreSQL."""
    if request.param == "embedded":
        yield dict(FAST)  # everything else: the defaults, under the working directory
        return
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    with fresh_database("postgresql", tmp_path) as url:
        try:
            yield {**FAST, "CXR_DATABASE_URL": url, "CXR_BROKER_URL": redis.url}
        finally:
            redis.stop()


def _drop(source: Path, inbox: Path, name: str | None = None) -> Path:
    """Copy in as a modality export does: a temporary name, then a rename into place."""
    target = inbox / (name or source.name)
    partial = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, partial)
    partial.rename(target)
    return target


def _results(cwd: Path, env: dict[str, str]) -> list[dict[str, object]]:
    out = run_cli("results", "--format", "jsonl", "--limit", "0", cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _healthy(web: httpx.Client) -> bool:
    try:
        return web.get("/healthz").status_code == 200
    except httpx.TransportError:  # not listening yet (or being restarted)
        return False


def _signed_in_results(web: httpx.Client) -> str:
    """Sign in with the shared password through the form, as a browser does; the results."""
    form = web.get("/login")
    assert form.status_code == 200
    token = _TOKEN.search(form.text)
    assert token, "the sign-in form has no form token"
    signed_in = web.post(
        "/login", data={"name": "", "password": WEB_PASSWORD, "csrf_token": token.group(1)}
    )
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["location"] == "/results"
    page = web.get("/results")
    assert page.status_code == 200
    return page.text


def test_up_screens_dropped_files_and_stops_cleanly(
    service_env: dict[str, str], shared_data: Path, tmp_path: Path
) -> None:
    port = free_port()
    service_env = {
        **service_env,
        "CXR_WEB_ENABLED": "true",
        "CXR_WEB_PASSWORD": WEB_PASSWORD,
        "CXR_WEB_PORT": str(port),
    }
    home = tmp_path / "site"
    home.mkdir()
    url = service_env.get("CXR_DATABASE_URL", f"sqlite:///{home / 'var' / 'cxr-screen.db'}")
    engine = make_engine(url)
    upgrade(engine)
    register_model(make_session_factory(engine), model_dir=home / "models", version="tiny-1")
    engine.dispose()

    shared_digest = tree_digest(shared_data / "dicom")
    service = Service(["up"], cwd=home, env=service_env, log=tmp_path / "up.log")
    try:
        service.wait_for_log("beat", timeout=60)
        service.wait_for_log("ready.", timeout=120)  # the screening worker
        inbox = home / "inbox"
        jpegs = sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[:3]
        dicoms = [
            shared_data / "dicom" / n
            for n in ("cr_chest_pa_mono1_j2k_lossless.dcm", "cr_chest_sc_jpeg_baseline.dcm")
        ]
        for source in [*jpegs, *dicoms]:
            _drop(source, inbox)
        corrupt = tmp_path / "corrupt.dcm"
        corrupt.write_bytes(
            (shared_data / "dicom" / "cr_chest_sc_jpeg_baseline.dcm").read_bytes()[:4000]
        )
        _drop(corrupt, inbox)

        def all_final() -> bool:
            rows = _results(home, service_env)
            return len(rows) == 6 and all(r["status"] in FINAL for r in rows)

        wait_until(all_final, timeout=240, what="six results", interval=1.0)
        rows = {Path(str(r["source_path"])).name: r for r in _results(home, service_env)}
        assert {n for n, r in rows.items() if r["status"] == "done"} == {
            *(p.name for p in jpegs),
            *(p.name for p in dicoms),
        }
        assert all(rows[n]["label"] in ("NORMAL", "PNEUMONIA") for n in rows if n != "corrupt.dcm")
        assert rows["corrupt.dcm"]["status"] == "failed"
        reasons = list((home / "quarantine").rglob("*corrupt.dcm.reason.json"))
        assert len(reasons) == 1
        assert json.loads(reasons[0].read_text())["status"] == "failed"
        table = run_cli("results", cwd=home, env=service_env)
        assert "corrupt.dcm" in table.stdout
        assert_invariants(
            url,
            Filing(inbox=inbox, archive=home / "archive", quarantine=home / "quarantine"),
            dropped=[p.read_bytes() for p in [*jpegs, *dicoms, corrupt]],
            outside={shared_data / "dicom": shared_digest},
        )

        # The web pages run beside them: healthy, and listing what was screened.
        assert f"web:      http://127.0.0.1:{port}/" in service.output()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
            wait_until(lambda: _healthy(web), timeout=60, what="/healthz to answer 200")
            health = web.get("/healthz").json()
            assert health["status"] == "ok", health
            assert web.get("/results", follow_redirects=False).headers["location"] == "/login"
            page = _signed_in_results(web)
            for row in _results(home, service_env):
                if row["status"] == "done":
                    assert f'<a href="/scans/{row["scan_id"]}">' in page
                    assert str(row["source_path"]) in page
            # Supervised like the other children: killed, it comes back.
            started = re.findall(r"started web \(pid (\d+)\)", service.output())
            assert len(started) == 1
            os.kill(int(started[0]), signal.SIGKILL)
            wait_until(
                lambda: "web exited (-9); restarting" in service.output() and _healthy(web),
                timeout=90,
                what="the web pages to be restarted",
            )
    finally:
        started = time.monotonic()
        code = service.stop(timeout=90)
        stopped_in = time.monotonic() - started
    assert code == 0, service.output()[-3000:]
    assert stopped_in < 90
    assert "cxr-screen stopped" in service.output()


def test_up_without_model_or_data_warns_and_keeps_scans_waiting(
    shared_data: Path, tmp_path: Path
) -> None:
    # No base weights: the bundled default model cannot go in service either (whether
    # or not this checkout has it, and whether or not this host could download them).
    env = {**FAST, "CXR_BASE_WEIGHTS": "none"}
    service = Service(["up"], cwd=tmp_path, env=env, log=tmp_path / "up.log")
    try:
        service.wait_for_log("ready.", timeout=120)
        _drop(sorted((shared_data / "chest_xray_fullres").rglob("*.jpeg"))[0], tmp_path / "inbox")
        wait_until(
            lambda: len(_results(tmp_path, env)) == 1, timeout=60, what="the scan to be recorded"
        )
        time.sleep(3)
        assert [r["status"] for r in _results(tmp_path, env)] == ["queued"]
    finally:
        assert service.stop(timeout=90) == 0
    output = service.output()
    assert output.count("warning: no model in service: the bundled") == 1
    assert output.count("no model is active and CXR_DATA_DIR is not set") == 1
    assert "wait safely in the queue" in output
    # A fresh embedded broker: its tables exist before the workers and beat start, so
    # none of them trips over another creating them.
    assert "Connection to broker lost" not in output
    assert "already exists" not in output
