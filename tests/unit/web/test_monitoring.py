"""/metrics parsed by prometheus_client's own parser, and /healthz's three checks."""

from __future__ import annotations

import socket
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cxr_screen.web.app import create_app
from db.models import ModelStatus, ModelVersion, ReportStatus, Scan, ScanStatus
from db.session import session_scope
from tests.factories import add_scan
from tests.unit.web.conftest import Web, web_settings


def _samples(web: Web) -> dict[str, list[Sample]]:
    response = web.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(response.text)
    return {family.name: family.samples for family in families}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no {name} {labels} in {samples}")


def _bucket(samples: list[Sample], name: str, le: float) -> float:
    for sample in samples:
        if sample.name == f"{name}_bucket" and float(sample.labels["le"]) == le:
            return sample.value
    raise AssertionError(f"no {name} bucket le={le} in {samples}")


def test_metrics_count_the_database_at_scrape_time(web: Web) -> None:
    families = _samples(web)
    assert _value(families["cxr_scans"], "cxr_scans", status="done") == 2
    assert _value(families["cxr_queue_depth"], "cxr_queue_depth") == 1
    failures = families["cxr_scan_failures"]
    assert _value(failures, "cxr_scan_failures_total", status="rejected", code="not_a_chest") == 1
    model = families["cxr_model_in_service"]
    assert _value(model, "cxr_model_in_service", version=web.seeded.active_version) == 1
    assert _value(families["cxr_training_runs"], "cxr_training_runs_total", status="failed") == 1
    gate = families["cxr_gate_decisions"]
    assert _value(gate, "cxr_gate_decisions_total", outcome="passed") == 1
    # Counters hold only what never changes again: no "none" decision, no running run.
    assert {sample.labels["outcome"] for sample in gate if "outcome" in sample.labels} <= {
        "passed",
        "failed",
    }
    runs = families["cxr_training_runs"]
    assert "running" not in {sample.labels.get("status") for sample in runs}
    assert "cxr_training_runs_in_progress" in families
    seen = families["cxr_worker_last_seen_timestamp_seconds"]
    assert _value(seen, "cxr_worker_last_seen_timestamp_seconds", worker="celery@gpu-1") > 0
    with session_scope(web.factory) as session:
        add_scan(session, status=ScanStatus.FAILED, error_code="unreadable")
        flagged = session.get(Scan, web.seeded.flagged)
        assert flagged is not None
        flagged.report_status = ReportStatus.FAILED
    again = _samples(web)
    assert _value(again["cxr_scan_failures"], "cxr_scan_failures_total", code="unreadable") == 1
    assert _value(again["cxr_reports"], "cxr_reports", status="failed") == 1


def test_latency_and_batch_size_are_histograms(web: Web) -> None:
    families = _samples(web)
    latency = families["cxr_screening_latency_seconds"]
    # The flagged scan's verdict came 4 s after it arrived; the other's about 29 minutes.
    assert _value(latency, "cxr_screening_latency_seconds_count") == 2
    assert _bucket(latency, "cxr_screening_latency_seconds", 2.0) == 0
    assert _bucket(latency, "cxr_screening_latency_seconds", 5.0) == 1
    assert _bucket(latency, "cxr_screening_latency_seconds", 1800.0) == 2
    assert 1700 < _value(latency, "cxr_screening_latency_seconds_sum") < 1810
    batch = families["cxr_batch_size"]
    assert _value(batch, "cxr_batch_size_count") == 1
    assert _bucket(batch, "cxr_batch_size", 4.0) == 0
    assert _bucket(batch, "cxr_batch_size", 8.0) == 1
    assert _value(batch, "cxr_batch_size_sum") == 8


def test_metrics_and_health_need_no_sign_in_and_hold_no_patient_data(web: Web) -> None:
    text = web.client.get("/metrics").text
    assert "film-0001" not in text
    assert "3f9a0c6e" not in text
    assert web.client.get("/healthz").status_code in (200, 503)


def test_healthz_is_ok_with_database_broker_and_an_active_model(web: Web) -> None:
    response = web.client.get("/healthz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["active_model"]["detail"] == web.seeded.active_version
    assert checks["database"]["ok"]
    assert checks["broker"]["ok"]


def test_healthz_fails_without_an_active_model(web: Web) -> None:
    with session_scope(web.factory) as session:
        for model in session.query(ModelVersion):
            model.status = ModelStatus.RETIRED
    response = web.client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["active_model"]["ok"] is False


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthz_fails_when_the_broker_is_unreachable_without_quoting_it(
    web: Web, tmp_path: Path
) -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{_closed_port()}/0"
    settings = web_settings(web.settings.storage.database_url, tmp_path, broker_url=url)
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.text
    assert response.json()["checks"]["broker"]["ok"] is False
    assert "hunter2secret" not in body
    assert "127.0.0.1" not in body
