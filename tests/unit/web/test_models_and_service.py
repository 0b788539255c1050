"""The models page (registry, runs, promote and roll back for admins) and the service page."""

from __future__ import annotations

from pathlib import Path

from db.model_registry import get_active_model, get_model
from db.session import session_scope
from tests.unit.web.conftest import Web


def test_the_registry_shows_versions_figures_gate_and_runs(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get("/models").text
    for words in (web.seeded.active_version, web.seeded.old_version, "0.981", "passed",
                  "AUC 0.981 &gt;= 0.975 of v-2026-11-01", "nightly", "no data"):  # fmt: skip
        assert words in page, words
    assert "Promote (gate)" not in page  # a reader sees no buttons
    assert "Roll back" not in page


def test_a_run_page_shows_its_log(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get("/models").text
    nightly = page.split("nightly")[0].split('href="/runs/')[-1].split('"')[0]
    run = web.client.get(f"/runs/{nightly}")
    assert run.status_code == 200
    assert "epoch 1/5 ...\ndone" in run.text
    assert web.client.get("/runs/9999").status_code == 404


def test_a_reader_may_not_promote_or_roll_back(web: Web) -> None:
    token = web.sign_in_reader()
    old = web.seeded.old_version
    data = {"csrf_token": token, "version": old}
    assert web.client.post("/models/promote", data=data).status_code == 403
    assert web.client.post("/models/rollback", data={"csrf_token": token}).status_code == 403
    with session_scope(web.factory) as session:
        active = get_active_model(session)
        assert active is not None
        assert active.version == web.seeded.active_version


def test_promotion_goes_through_the_cli_gate_and_refuses_without_its_data(web: Web) -> None:
    token = web.sign_in_admin()
    assert "Promote (gate)" in web.client.get("/models").text
    response = web.client.post(
        "/models/promote", data={"csrf_token": token, "version": web.seeded.old_version}
    )
    assert response.status_code == 409
    # The gate's own refusal (trainer.promotion), as `cxr-screen models promote` prints it.
    assert "the gate needs the evaluation folder: set CXR_DATA_DIR" in response.text
    with session_scope(web.factory) as session:
        active = get_active_model(session)
        assert active is not None
        assert active.version == web.seeded.active_version


def test_an_admin_rolls_back_and_the_change_names_them(web: Web) -> None:
    token = web.sign_in_admin()
    response = web.client.post(
        "/models/rollback", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    with session_scope(web.factory) as session:
        active = get_active_model(session)
        assert active is not None
        assert active.version == web.seeded.old_version
        rolled = get_model(session, version=web.seeded.active_version)
        assert rolled is not None
        assert "rolled back by adam on the web pages" in (rolled.notes or "")
    page = web.client.get(response.headers["location"]).text
    assert f"Rolled back {web.seeded.active_version}" in page


def test_a_report_png_is_served_only_from_inside_the_model_folder(web: Web) -> None:
    model_dir = web.settings.storage.model_dir.resolve()
    folder = model_dir / web.seeded.active_version
    folder.mkdir(parents=True)
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    (folder / "report.png").write_bytes(png)
    outside = Path(web.settings.storage.archive).resolve().parent / "x"
    outside.mkdir()
    (outside / "report.png").write_bytes(png)
    with session_scope(web.factory) as session:
        active = get_active_model(session)
        old = get_model(session, version=web.seeded.old_version)
        assert active is not None
        assert old is not None
        active.artifact_path = str(folder / "model.keras")
        old.artifact_path = str(outside / "model.keras")
        ids = (active.id, old.id)
    web.sign_in_reader()
    assert f'href="/models/{ids[0]}/report.png"' in web.client.get("/models").text
    assert web.client.get(f"/models/{ids[0]}/report.png").content == png
    assert web.client.get(f"/models/{ids[1]}/report.png").status_code == 404


def test_the_service_page_shows_queue_rates_failures_reports_workers_model(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get("/service").text
    for words in ("1 queued, 0 being screened", web.seeded.active_version,
                  "0 pending, 0 failed, 1 sent", "not_a_chest", "celery@gpu-1",
                  "Scans finished per minute"):  # fmt: skip
        assert words in page, words
