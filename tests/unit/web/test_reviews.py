"""Reviews: a reader's label of a verdict, recorded with who and what, never overwritten."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Prediction, Review, UserRole
from db.reviews import UNUSABLE, add_review, latest_reviews, review_counts, reviews_of
from db.session import session_scope
from db.types import utcnow
from db.users import add_user
from tests.factories import add_model_version, add_prediction, add_scan
from tests.unit.web.conftest import Web
from tests.web_seed import ADMIN, READER


def _prediction_id(web: Web, scan_id: int) -> str:
    page = web.client.get(f"/scans/{scan_id}").text
    found = re.search(r'name="prediction_id" value="(\d+)"', page)
    assert found
    return found.group(1)


def _review(web: Web, token: str, scan_id: int, label: str) -> int:
    data = {"csrf_token": token, "label": label, "prediction_id": _prediction_id(web, scan_id)}
    response = web.client.post(f"/scans/{scan_id}/review", data=data, follow_redirects=False)
    return response.status_code


def test_a_review_is_recorded_with_reader_verdict_and_counted(web: Web) -> None:
    token = web.sign_in_reader()
    scan = web.seeded.flagged
    assert 'reviewed: <strong class="reviewed">0</strong>' in web.client.get("/results").text
    assert _review(web, token, scan, "PNEUMONIA") == 303
    page = web.client.get(f"/scans/{scan}?reviewed=1").text
    assert "Your review is recorded." in page
    assert "in force" in page
    results = web.client.get("/results").text
    assert 'reviewed: <strong class="reviewed">1</strong>' in results
    assert "confirmed: <strong>1</strong>" in results
    with session_scope(web.factory) as session:
        (row,) = latest_reviews(session)
        assert (row.scan_id, row.label, row.reviewer) == (scan, "PNEUMONIA", READER[0])
        assert (row.model_version, row.probability) == (web.seeded.active_version, 0.91)
        assert row.predicted_label == "PNEUMONIA"


def test_a_new_review_supersedes_and_keeps_the_old_one(web: Web) -> None:
    token = web.sign_in_reader()
    scan = web.seeded.flagged
    assert _review(web, token, scan, "PNEUMONIA") == 303
    web.client.post("/logout", data={"csrf_token": token})
    token = web.sign_in_admin()
    assert _review(web, token, scan, UNUSABLE) == 303
    with session_scope(web.factory) as session:
        history = reviews_of(session, scan_id=scan)
        assert [(r.reviewer, r.label) for r in history] == [
            (ADMIN[0], UNUSABLE),
            (READER[0], "PNEUMONIA"),
        ]
        assert [r.label for r in latest_reviews(session)] == [UNUSABLE]
        counts = review_counts(session)
        assert (counts.reviewed, counts.unusable, counts.confirmed) == (1, 1, 0)
    page = web.client.get(f"/scans/{scan}").text
    assert page.count("superseded") == 1


def test_a_label_the_model_does_not_know_is_refused(web: Web) -> None:
    token = web.sign_in_reader()
    assert _review(web, token, web.seeded.flagged, "COVID") == 422
    with session_scope(web.factory) as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 0


def test_a_verdict_of_another_scan_cannot_be_reviewed_through_this_one(web: Web) -> None:
    token = web.sign_in_reader()
    other = _prediction_id(web, web.seeded.normal)
    response = web.client.post(
        f"/scans/{web.seeded.flagged}/review",
        data={"csrf_token": token, "label": "NORMAL", "prediction_id": other},
    )
    assert response.status_code == 409
    response = web.client.post(
        f"/scans/{web.seeded.queued}/review",
        data={"csrf_token": token, "label": "NORMAL", "prediction_id": other},
    )
    assert response.status_code == 409


def test_a_correction_counts_as_corrected(web: Web) -> None:
    token = web.sign_in_reader()
    assert _review(web, token, web.seeded.normal, "PNEUMONIA") == 303
    with session_scope(web.factory) as session:
        counts = review_counts(session)
    assert (counts.reviewed, counts.corrected, counts.confirmed) == (1, 1, 0)


def test_latest_reviews_pick_the_newest_per_scan_for_a_trainer(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        reader = add_user(session, name="r", role=UserRole.READER, password_hash=None)
        model = add_model_version(session)
        first, second = add_scan(session), add_scan(session)
        verdict = add_prediction(session, scan=first, model=model, probability=0.8)
        old = add_review(
            session, scan_id=first.id, label="NORMAL", reviewer_id=reader.id, prediction=verdict
        )
        old.reviewed_at = utcnow() - timedelta(hours=1)
        add_review(
            session, scan_id=first.id, label="PNEUMONIA", reviewer_id=reader.id, prediction=verdict
        )
        add_review(
            session, scan_id=second.id, label=UNUSABLE, reviewer_id=reader.id, prediction=None
        )
        ids, shas = (first.id, second.id), (first.sha256, second.sha256)
    with session_scope(session_factory) as session:
        found = latest_reviews(session)
        assert [(r.scan_id, r.sha256, r.label) for r in found] == [
            (ids[0], shas[0], "PNEUMONIA"),
            (ids[1], shas[1], UNUSABLE),
        ]
        assert found[0].probability == pytest.approx(0.8)
        assert found[1].model_version is None
        assert latest_reviews(session, since=utcnow() + timedelta(hours=1)) == []
        assert [r.scan_id for r in latest_reviews(session, scan_ids=[ids[1]])] == [ids[1]]
        assert session.scalar(select(func.count()).select_from(Prediction)) == 1
