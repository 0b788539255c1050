"""Signing in and out, refusals of anonymous requests, and the form token on every POST."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from cxr_screen.web.app import create_app
from cxr_screen.web.sessions import COOKIE_NAME
from tests.unit.web.conftest import Web, csrf_of, sign_in, web_settings
from tests.web_seed import READER


@pytest.mark.parametrize(
    "path", ["/", "/results", "/results.csv", "/scans/1", "/scans/1/heatmap.png",
             "/scans/1/input.png", "/models", "/runs/1", "/service"],
)  # fmt: skip
def test_an_anonymous_request_is_sent_to_the_sign_in_page(web: Web, path: str) -> None:
    response = web.client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_the_sign_in_page_starts_a_session_with_a_strict_http_only_cookie(web: Web) -> None:
    response = web.client.get("/login")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "csrf_token" in response.text


def test_a_reader_signs_in_sees_the_results_and_signs_out(web: Web) -> None:
    token = web.sign_in_reader()
    page = web.client.get("/results")
    assert page.status_code == 200
    assert "rita (reader)" in page.text
    out = web.client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert web.client.get("/results", follow_redirects=False).status_code == 303


def test_a_wrong_password_or_unknown_name_is_refused_alike(web: Web) -> None:
    for name, password in ((READER[0], "not the password"), ("nobody", READER[1])):
        token = csrf_of(web.client.get("/login").text)
        response = web.client.post(
            "/login", data={"name": name, "password": password, "csrf_token": token}
        )
        assert response.status_code == 401
        assert "The name or password is not right." in response.text
        assert web.client.get("/results", follow_redirects=False).status_code == 303


def test_a_post_without_the_form_token_is_refused(web: Web) -> None:
    web.sign_in_reader()
    scan = web.seeded.flagged
    for data in ({"label": "NORMAL", "prediction_id": "1"},
                 {"label": "NORMAL", "prediction_id": "1", "csrf_token": "forged"}):  # fmt: skip
        response = web.client.post(f"/scans/{scan}/review", data=data)
        assert response.status_code == 403
        assert "Form refused" in response.text
    assert "Not recorded" not in web.client.get(f"/scans/{scan}").text
    assert "superseded" not in web.client.get(f"/scans/{scan}").text


def test_a_sign_in_without_the_form_token_is_refused(web: Web) -> None:
    response = web.client.post("/login", data={"name": READER[0], "password": READER[1]})
    assert response.status_code == 403
    assert web.client.get("/results", follow_redirects=False).status_code == 303


def test_a_token_from_before_sign_in_is_not_valid_after_it(web: Web) -> None:
    before = csrf_of(web.client.get("/login").text)
    after = sign_in(web.client, *READER)
    assert before != after
    response = web.client.post("/logout", data={"csrf_token": before})
    assert response.status_code == 403


def test_a_forged_cookie_is_not_a_session(web: Web) -> None:
    web.sign_in_reader()
    value = web.client.cookies[COOKIE_NAME]
    body, _ = value.split(".")
    web.client.cookies.clear()
    web.client.cookies.set(COOKIE_NAME, f"{body}.AAAA")
    assert web.client.get("/results", follow_redirects=False).status_code == 303
    web.client.cookies.clear()
    web.client.cookies.set(COOKIE_NAME, value)  # the genuine one still works
    assert web.client.get("/results", follow_redirects=False).status_code == 200


def test_the_shared_password_signs_in_as_the_shared_admin(web: Web, tmp_path: object) -> None:
    from fastapi.testclient import TestClient

    from cxr_screen.web.app import create_app

    settings = web_settings(
        web.settings.storage.database_url, web.settings.storage.archive.parent,
        web_password="correct horse battery",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        token = csrf_of(client.get("/login").text)
        wrong = client.post("/login", data={"password": "incorrect", "csrf_token": token})
        assert wrong.status_code == 401
        ok = client.post(
            "/login",
            data={"password": "correct horse battery", "csrf_token": token},
            follow_redirects=False,
        )
        assert ok.status_code == 303
        assert "shared (admin)" in client.get("/results").text


def test_without_a_shared_password_an_empty_name_never_signs_in(web: Web) -> None:
    token = csrf_of(web.client.get("/login").text)
    response = web.client.post("/login", data={"password": READER[1], "csrf_token": token})
    assert response.status_code == 401


def test_pages_are_never_cached_framed_or_scripted(web: Web) -> None:
    web.sign_in_reader()
    headers = web.client.get("/results").headers
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    assert "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]


def test_a_refused_form_value_is_named_never_echoed(web: Web) -> None:
    token = csrf_of(web.client.get("/login").text)
    secret = "correct horse battery staple " * 40  # over the 1024-character limit

    response = web.client.post(
        "/login", data={"name": "rita", "password": secret, "csrf_token": token}
    )

    assert response.status_code == 422
    assert "password" in response.text
    assert "correct horse" not in response.text


def test_an_anonymous_post_with_a_large_upload_is_refused(web: Web) -> None:
    response = web.client.post(
        "/models/rollback", files={"upload": ("big.bin", b"\0" * (4 * 1024 * 1024))}
    )
    assert response.status_code == 403


def test_behind_an_https_proxy_the_cookie_is_secure(
    migrated_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    settings = web_settings(database_url, tmp_path, web_https=True)
    with TestClient(create_app(settings, engine=migrated_engine)) as client:
        cookie = client.get("/login").headers["set-cookie"]
    assert "Secure" in cookie


def test_over_plain_http_without_a_proxy_the_cookie_is_not_marked_secure(web: Web) -> None:
    assert "Secure" not in web.client.get("/login").headers["set-cookie"]
