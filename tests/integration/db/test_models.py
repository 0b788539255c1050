"""The models' constraints hold on both databases: what must be unique is unique."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import ModelVersion, Scan, ScanStatus
from db.session import session_scope
from tests.factories import add_model_version, add_prediction, add_scan


def test_scan_round_trips_with_aware_utc_timestamps(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        scan_id = add_scan(session, modality="CR", view_position="PA").id
    with session_factory() as session:
        scan = session.get(Scan, scan_id)
        assert scan is not None
        assert scan.status is ScanStatus.QUEUED
        assert scan.received_at.tzinfo is not None
        assert scan.received_at.utcoffset() == UTC.utcoffset(None)
        assert (scan.modality, scan.view_position, scan.attempts) == ("CR", "PA", 0)


def test_the_same_content_hash_is_one_scan(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as session:
        add_scan(session, sha256="a" * 64)
    with (
        pytest.raises(IntegrityError, match=r"(?i)unique"),
        session_scope(session_factory) as session,
    ):
        add_scan(session, sha256="a" * 64, source_path="inbox/copy.jpeg")


def test_one_prediction_per_scan_and_model_version(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        scan = add_scan(session)
        model = add_model_version(session)
        add_prediction(session, scan=scan, model=model, probability=0.9)
        # A second model version on the same scan is fine ...
        other = add_model_version(session, version="other", status="candidate")
        add_prediction(session, scan=scan, model=other, probability=0.2)
        scan_id, model_id = scan.id, model.id
    # ... the same model version twice is not: a redelivered task must not double-count.
    with (
        pytest.raises(IntegrityError, match=r"(?i)unique"),
        session_scope(session_factory) as session,
    ):
        add_prediction(
            session,
            scan=session.get_one(Scan, scan_id),
            model=session.get_one(ModelVersion, model_id),
            probability=0.1,
        )


def test_unknown_status_is_refused_by_the_database(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        scan_id = add_scan(session).id
    # Raw SQL, as another tool would write it: the CHECK constraint is the last line.
    with (
        pytest.raises(IntegrityError, match=r"(?i)check"),
        session_scope(session_factory) as session,
    ):
        session.execute(text("UPDATE scans SET status = 'lost' WHERE id = :id"), {"id": scan_id})
