"""Prometheus metrics read from the database at scrape time: every process's work counts."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from db import service_stats
from db.model_registry import get_active_model
from db.models import RunStatus
from db.report_admin import count_reports
from db.service_stats import Histogram
from db.session import session_scope

LATENCY_BOUNDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
BATCH_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


class DatabaseCollector(Collector):
    """Collects the service's figures from the results database on each scrape.

    The database is the source of truth for every worker, watcher and trainer, so one
    web process reports them all, and a restart loses nothing.
    """

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def collect(self) -> Iterator[Metric]:
        """One read-only transaction's figures."""
        with session_scope(self._factory) as session:
            yield from _scans(session)
            yield _histogram(
                "cxr_screening_latency_seconds",
                "Seconds from a scan's arrival to its first verdict.",
                service_stats.screening_latency(session, bounds=LATENCY_BOUNDS),
            )
            yield _histogram(
                "cxr_batch_size",
                "Scans in the batch that made each verdict.",
                service_stats.batch_sizes(session, bounds=BATCH_BOUNDS),
            )
            yield from _service(session)


def _scans(session: Session) -> Iterator[Metric]:
    by_status = service_stats.scans_by_status(session)
    scans = GaugeMetricFamily("cxr_scans", "Scans by status.", labels=["status"])
    for status, count in by_status.items():
        scans.add_metric([status], count)
    yield scans
    yield GaugeMetricFamily(
        "cxr_queue_depth", "Scans waiting for a worker (queued).", value=by_status["queued"]
    )
    failures = CounterMetricFamily(
        "cxr_scan_failures",
        "Scans failed or rejected, by status and error code.",
        labels=["status", "code"],
    )
    for status, code, count in service_stats.failures_by_code(session):
        failures.add_metric([status, code], count)
    yield failures


def _service(session: Session) -> Iterator[Metric]:
    active = get_active_model(session)
    model = GaugeMetricFamily(
        "cxr_model_in_service", "The active model version (value 1).", labels=["version"]
    )
    if active is not None:
        model.add_metric([active.version], 1)
    yield model
    reports = GaugeMetricFamily(
        "cxr_reports", "DICOM report deliveries by state.", labels=["status"]
    )
    for report_status, count in count_reports(session).items():
        reports.add_metric([report_status.value], count)
    yield reports
    # Counters only count what never changes again: a finished run's outcome, a gate's
    # decision. A run in progress is a gauge (it leaves that state when it ends).
    by_run_status = service_stats.runs_by_status(session)
    runs = CounterMetricFamily(
        "cxr_training_runs", "Finished training runs by outcome.", labels=["status"]
    )
    for status, count in by_run_status.items():
        if status != RunStatus.RUNNING.value:
            runs.add_metric([status], count)
    yield runs
    yield GaugeMetricFamily(
        "cxr_training_runs_in_progress",
        "Training runs running now.",
        value=by_run_status.get(RunStatus.RUNNING.value, 0),
    )
    gate = CounterMetricFamily(
        "cxr_gate_decisions",
        "Registered model versions by the gate's decision (versions without one left out).",
        labels=["outcome"],
    )
    for outcome, count in service_stats.gate_outcomes(session).items():
        if outcome != "none":
            gate.add_metric([outcome], count)
    yield gate
    seen = GaugeMetricFamily(
        "cxr_worker_last_seen_timestamp_seconds",
        "When each worker last wrote a verdict (Unix time).",
        labels=["worker"],
    )
    for worker in service_stats.workers_seen(session):
        seen.add_metric([worker.name], worker.last_seen.timestamp())
    yield seen


def _histogram(name: str, documentation: str, figures: Histogram) -> Metric:
    buckets = [
        ("+Inf" if bound == float("inf") else f"{bound:g}", n) for bound, n in figures.buckets
    ]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=figures.total)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else str(float(bound))


def registry_for(factory: sessionmaker[Session]) -> CollectorRegistry:
    """A registry of its own (not the process-wide one) holding the database collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(factory))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in Prometheus' text format."""
    return generate_latest(registry)
