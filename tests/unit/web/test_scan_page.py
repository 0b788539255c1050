"""A scan's page: pictures read confined from the archive, facts, reason and remedy."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cxr_screen.web.app import create_app
from db.models import Scan
from db.session import session_scope
from tests.unit.web.conftest import Web, sign_in, web_settings
from tests.web_seed import HOSTILE_NAME, INPUT_SIZE, READER


def test_a_screened_scan_shows_verdict_facts_whereabouts_and_report(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get(f"/scans/{web.seeded.flagged}").text
    for words in ("PNEUMONIA", "0.910", "0.500", web.seeded.active_version, "DX", "PA",
                  "1.2.826.0.1.3680043.8.498.1", "3f9a0c6e5b1d4a7f8e2c9b0a1d3e5f70",
                  "archive: ", "(present)", "sent", "film-0001.jpeg",
                  f"/scans/{web.seeded.flagged}/heatmap.png"):  # fmt: skip
        assert words in page, words


def test_the_heatmap_is_the_archived_png(web: Web) -> None:
    web.sign_in_reader()
    response = web.client.get(f"/scans/{web.seeded.flagged}/heatmap.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == web.seeded.heatmap_bytes


def test_the_model_input_is_the_archived_file_decoded_at_the_model_size(web: Web) -> None:
    web.sign_in_reader()
    response = web.client.get(f"/scans/{web.seeded.flagged}/input.png")
    assert response.status_code == 200
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (INPUT_SIZE, INPUT_SIZE)


def test_no_picture_for_a_scan_without_one(web: Web) -> None:
    web.sign_in_reader()
    for scan in (web.seeded.normal, web.seeded.rejected, 999_999):
        assert web.client.get(f"/scans/{scan}/heatmap.png").status_code == 404
        assert web.client.get(f"/scans/{scan}/input.png").status_code == 404


def test_a_heatmap_path_outside_the_archive_is_never_read(web: Web) -> None:
    secret = web.settings.storage.archive.parent / "elsewhere.png"
    secret.write_bytes(web.seeded.heatmap_bytes)
    with session_scope(web.factory) as session:
        scan = session.get(Scan, web.seeded.flagged)
        assert scan is not None
        original = scan.heatmap_path
        scan.heatmap_path = str(web.settings.storage.archive / ".." / "elsewhere.png")
    web.sign_in_reader()
    assert web.client.get(f"/scans/{web.seeded.flagged}/heatmap.png").status_code == 404
    # A symlink inside the archive that leads out of it is not followed either.
    assert original is not None
    Path(original).unlink()
    Path(original).symlink_to(secret)
    with session_scope(web.factory) as session:
        scan = session.get(Scan, web.seeded.flagged)
        assert scan is not None
        scan.heatmap_path = original
    assert web.client.get(f"/scans/{web.seeded.flagged}/heatmap.png").status_code == 404


def test_an_archived_file_whose_bytes_changed_is_not_shown_as_the_input(web: Web) -> None:
    with session_scope(web.factory) as session:
        scan = session.get(Scan, web.seeded.flagged)
        assert scan is not None
        assert scan.stored_path is not None
        stored = scan.stored_path
    with Path(stored).open("ab") as handle:
        handle.write(b"\x00")
    web.sign_in_reader()
    assert web.client.get(f"/scans/{web.seeded.flagged}/input.png").status_code == 404


def test_a_rejected_scan_shows_the_reason_and_the_remedy(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get(f"/scans/{web.seeded.rejected}").text
    assert "not_a_chest" in page
    assert "cr_hip.dcm: Body Part Examined is &#39;HIP&#39;, not a chest" in page
    assert "only chest radiographs are screened (set CXR_CHEST_BODY_PARTS" in page
    assert "quarantine: " in page
    assert "(missing)" in page
    assert "Only scans with a verdict can be reviewed." in page


def test_a_file_name_with_markup_is_text_on_the_scan_page(web: Web) -> None:
    web.sign_in_reader()
    page = web.client.get(f"/scans/{web.seeded.normal}").text
    assert HOSTILE_NAME not in page
    assert "<script" not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


def test_an_unknown_scan_is_a_404_page(web: Web) -> None:
    web.sign_in_reader()
    response = web.client.get("/scans/424242")
    assert response.status_code == 404
    assert "No such scan" in response.text


def test_the_pictures_are_found_with_the_default_relative_folders(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CXR_ARCHIVE` unset is `archive`, relative to the working directory, while the
    workers record absolute paths below it: the page must find them all the same."""
    monkeypatch.chdir(web.settings.storage.archive.parent)
    relative = web_settings(
        web.database_url,
        web.settings.storage.archive.parent,
        archive=Path("archive"),
        inbox=Path("inbox"),
        quarantine=Path("quarantine"),
    )
    assert not relative.storage.archive.is_absolute()
    app = create_app(relative, engine=web.engine)
    with TestClient(app) as client:
        sign_in(client, *READER)
        heatmap = client.get(f"/scans/{web.seeded.flagged}/heatmap.png")
        page = client.get(f"/scans/{web.seeded.flagged}").text
    assert heatmap.status_code == 200
    assert heatmap.content == web.seeded.heatmap_bytes
    assert "archive: " in page
    assert "(present)" in page
