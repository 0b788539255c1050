"""The web pages in a real browser (Debian's chromium driven by Playwright), against the real
`cxr-screen web` started as a subprocess on a seeded SQLite database.

Screenshots of each page go to a temporary folder, or to docs/screenshots/ with
CXR_UPDATE_SCREENSHOTS=1 (how the pictures in docs/web.md are made).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.cli_runner import cxr_screen_executable
from tests.conftest import SHARED_DIR
from tests.web_seed import ADMIN, HOSTILE_NAME, READER, Seeded, seed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
VIEWPORT = {"width": 1100, "height": 760}

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is in the dev extra: pip install -e .[dev]"
)
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent: `apt-get install chromium` (deploy/test.sh installs it)",
        allow_module_level=True,
    )


@dataclass(frozen=True, slots=True)
class Server:
    """The running `cxr-screen web` and what it shows."""

    url: str
    seeded: Seeded
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"cxr-screen web exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=2):  # noqa: S310 - our URL
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"cxr-screen web did not answer within 60 s: {log.read_text()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`cxr-screen web` on a free loopback port, on a database seeded by the db functions."""
    url = f"sqlite:///{tmp_path / 'cxr.db'}"
    engine = make_engine(url)
    upgrade(engine)
    seeded = seed(make_session_factory(engine), folders=tmp_path, shared=SHARED_DIR)
    engine.dispose()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_DATABASE_URL=url,
        CXR_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        CXR_INBOX=str(tmp_path / "inbox"),
        CXR_ARCHIVE=str(tmp_path / "archive"),
        CXR_QUARANTINE=str(tmp_path / "quarantine"),
        CXR_MODEL_DIR=str(tmp_path / "models"),
        CXR_PSEUDONYM_KEY="p" * 32,
    )
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [cxr_screen_executable(), "web", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, log)
        yield Server(base, seeded, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go."""
    if os.environ.get("CXR_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def test_a_reader_filters_opens_a_scan_reviews_it_and_sees_it_counted(
    server: Server, shots: Path
) -> None:
    dialogs: list[str] = []
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            # Anonymous: sent to the sign-in page.
            page.goto(f"{server.url}/results")
            assert page.url.endswith("/login")
            page.fill("input[name=name]", READER[0])
            page.fill("input[name=password]", READER[1])
            page.screenshot(path=shots / "login.png")
            page.click("button[type=submit]")
            page.wait_for_url("**/results")
            assert page.locator("#results tbody tr").count() == 4
            # A file name with markup is text: shown as typed, never run.
            assert HOSTILE_NAME in page.locator("#results").inner_text()
            assert page.locator("#results script").count() == 0
            page.select_option("select[name=status]", "done")
            page.click("form.filters button[type=submit]")
            page.wait_for_url("**/results?*status=done*")
            assert page.locator("#results tbody tr").count() == 2
            page.screenshot(path=shots / "results.png")
            # The scan with its heatmap.
            page.click(f"#results a[href='/scans/{server.seeded.flagged}']")
            page.wait_for_url(f"**/scans/{server.seeded.flagged}")
            page.wait_for_load_state("networkidle")
            loaded = page.eval_on_selector("#heatmap", "img => img.complete && img.naturalWidth")
            assert loaded
            assert loaded > 0
            assert "PNEUMONIA" in page.locator("#verdict").inner_text()
            page.screenshot(path=shots / "scan.png", full_page=True)
            # Review it.
            page.check("input[name=label][value=PNEUMONIA]")
            page.click("#review-form button[type=submit]")
            page.wait_for_url("**/scans/*?reviewed=1")
            assert "Your review is recorded." in page.content()
            assert READER[0] in page.locator("#reviews").inner_text()
            page.goto(f"{server.url}/results")
            assert page.locator("#review-counts .reviewed").inner_text() == "1"
            # A request without the form token is refused, even with the session cookie.
            refused = page.request.post(
                f"{server.url}/scans/{server.seeded.flagged}/review",
                form={"label": "NORMAL", "prediction_id": "1"},
            )
            assert refused.status == 403
            page.goto(f"{server.url}/service")
            assert "celery@gpu-1" in page.locator("#workers").inner_text()
            page.screenshot(path=shots / "service.png", full_page=True)
            # An admin's models page, with the promote and roll back buttons.
            page.click("header button[type=submit]")
            page.wait_for_url("**/login")
            page.fill("input[name=name]", ADMIN[0])
            page.fill("input[name=password]", ADMIN[1])
            page.click("button[type=submit]")
            page.wait_for_url("**/results")
            page.goto(f"{server.url}/models")
            assert page.locator("#models button").count() >= 1
            page.screenshot(path=shots / "models.png", full_page=True)
            # A browser that never signed in gets nothing.
            anonymous = browser.new_context()
            response = anonymous.request.get(
                f"{server.url}/scans/{server.seeded.flagged}/heatmap.png", max_redirects=0
            )
            assert response.status == 303
            assert response.headers["location"] == "/login"
            anonymous.close()
        finally:
            browser.close()
    assert dialogs == [], f"a script ran in the page: {dialogs}"
    for name in ("login", "results", "scan", "service", "models"):
        picture = shots / f"{name}.png"
        assert picture.stat().st_size > 1000, name
    log = server.log.read_text()
    assert "film-0001" not in log  # no file name (patient data) in the server's log
    assert READER[1] not in log
    assert ADMIN[1] not in log
