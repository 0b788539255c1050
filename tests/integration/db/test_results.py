"""The results view: one row per scan with its latest prediction, and every CLI filter."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.models import ScanStatus
from db.results import ResultFilter, list_results
from db.session import session_scope
from tests.factories import add_model_version, add_prediction, add_scan, hours_ago


def _seed(factory: sessionmaker[Session]) -> dict[str, int]:
    with session_scope(factory) as session:
        old_model = add_model_version(session, version="2026.11.01", status="retired")
        new_model = add_model_version(session, version="2026.11.28")
        rescreened = add_scan(session, status=ScanStatus.DONE, received_at=hours_ago(30))
        add_prediction(
            session, scan=rescreened, model=old_model, probability=0.2, created_at=hours_ago(29)
        )
        add_prediction(
            session,
            scan=rescreened,
            model=new_model,
            probability=0.8,
            created_at=hours_ago(1),
            inference_precision="mixed_bfloat16",
        )
        normal = add_scan(session, status=ScanStatus.DONE, received_at=hours_ago(2))
        add_prediction(session, scan=normal, model=new_model, probability=0.1)
        waiting = add_scan(session, received_at=hours_ago(0.5))
        broken = add_scan(
            session,
            status=ScanStatus.FAILED,
            error="broken.dcm: the JPEG stream is corrupt",
            error_code="unreadable",
            received_at=hours_ago(0.1),
        )
        return {
            "rescreened": rescreened.id,
            "normal": normal.id,
            "waiting": waiting.id,
            "broken": broken.id,
        }


def test_one_row_per_scan_with_the_latest_prediction(
    session_factory: sessionmaker[Session],
) -> None:
    ids = _seed(session_factory)
    with session_factory() as session:
        rows = {r.scan_id: r for r in list_results(session, filters=ResultFilter(limit=None))}
    assert set(rows) == set(ids.values())
    latest = rows[ids["rescreened"]]
    assert (latest.label, latest.model_version) == ("PNEUMONIA", "2026.11.28")
    assert latest.inference_precision == "mixed_bfloat16"
    assert rows[ids["normal"]].inference_precision == "float32"
    assert latest.probability is not None
    assert abs(latest.probability - 0.8) < 1e-9
    assert rows[ids["waiting"]].label is None
    assert rows[ids["broken"]].error == "broken.dcm: the JPEG stream is corrupt"
    ordered = list(rows)
    assert ordered[0] == ids["broken"], "newest first"


def test_filters_narrow_the_table(session_factory: sessionmaker[Session]) -> None:
    ids = _seed(session_factory)

    def scan_ids(**kwargs: object) -> set[int]:
        with session_factory() as session:
            return {r.scan_id for r in list_results(session, filters=ResultFilter(**kwargs))}  # type: ignore[arg-type]

    assert scan_ids(status=ScanStatus.FAILED) == {ids["broken"]}
    assert scan_ids(label="PNEUMONIA") == {ids["rescreened"]}
    assert scan_ids(min_probability=0.5) == {ids["rescreened"]}
    assert scan_ids(model_version="2026.11.28") == {ids["rescreened"], ids["normal"]}
    assert scan_ids(since=hours_ago(3)) == {ids["normal"], ids["waiting"], ids["broken"]}
    assert scan_ids(until=hours_ago(1)) == {ids["rescreened"], ids["normal"]}
    assert scan_ids(since=hours_ago(3), until=hours_ago(0.2)) == {ids["normal"], ids["waiting"]}
    assert len(scan_ids(limit=2)) == 2
    assert scan_ids(since=hours_ago(0) + timedelta(hours=1)) == set()
