"""Web pages on a big results table: how long each page takes with 100,000 results.

Usage (from the repository root):

    .venv/bin/python bench/web_pages.py [--rows N] [--runs R] [--revision REV]
                                        [--databases sqlite,postgresql] [--output FILE]

Fills a fresh database with N results (default 100,000): scans over the last 90 days
with a realistic mix of statuses (done, rejected, failed; queued and processing only in
the last minutes), formats, views, report and heatmap states, each screened scan with a
verdict (NORMAL or PNEUMONIA, probabilities of a screening model, four model versions
in service one after another, a few scans screened again by a later model), one in a
hundred reviewed, and a nightly training run each day; inserted in bulk through
SQLAlchemy Core. SQLite is a temporary file; PostgreSQL is a scratch database
(`cxr_bench_web`, created and dropped on the server of CXR_BENCH_POSTGRES_URL, default
the local test server), vacuumed and analysed after the load as autovacuum does a
growing table (the visibility map lets PostgreSQL count from indexes). Then the real app
runs in-process (Starlette's TestClient, signed in with the shared password) and each
page is fetched once to warm up and R times (default 5) timed: the median, fastest and
slowest go to the table. `--revision` migrates only that far (to measure the schema
before an index was added). Results: bench/results/web_pages.md and, beside it, .json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine, create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import git_revision, machine, now  # noqa: E402
from cxr_screen.web.app import create_app  # noqa: E402
from db.migrate import current_revision, upgrade  # noqa: E402
from db.models import ModelVersion, Prediction, Review, Scan, TrainingRun, User  # noqa: E402
from db.session import make_engine  # noqa: E402
from worker.settings import load_settings  # noqa: E402

POSTGRES_URL = os.environ.get(
    "CXR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCRATCH_DATABASE = "cxr_bench_web"
PASSWORD = "benchmark shared password"  # noqa: S105 - a scratch database's
DAYS = 90
CHUNK = 5000
SLOW_MS = 300.0
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
# (version, day it went into service, counted back from now)
VERSIONS = (("v2026.09.10", 90), ("v2026.10.02", 67), ("v2026.10.30", 39), ("v2026.11.21", 17))


@dataclass(frozen=True)
class Page:
    """One timed request: a name for the table and the URL."""

    name: str
    url: str


def pages() -> list[Page]:
    """The requests the benchmark times, in table order."""
    return [
        Page("results, first page, unfiltered", "/results"),
        Page(
            "results, filtered (done, PNEUMONIA, p >= 0.8, last 7 days)",
            "/results?status=done&label=PNEUMONIA&min_probability=0.8&since=7d",
        ),
        Page("results, page 500 (rows 24,951-25,000)", "/results?page=500"),
        Page(
            "CSV (done, PNEUMONIA, last 11 days)",
            "/results.csv?status=done&label=PNEUMONIA&since=11d",
        ),
        Page("service", "/service"),
        Page("/metrics", "/metrics"),
    ]


# --- filling the database -------------------------------------------------------------


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


def _status(rng: random.Random, age: timedelta) -> str:
    if age < timedelta(minutes=2):
        return rng.choices(["queued", "processing", "done"], [3, 1, 2])[0]
    return rng.choices(["done", "rejected", "failed"], [95.0, 3.5, 1.5])[0]


def _probability(rng: random.Random) -> float:
    # A screening model's answers: most films clearly one way, some in between.
    if rng.random() < 0.42:
        return min(1.0, rng.betavariate(8, 1.5))
    return max(0.0, rng.betavariate(1.5, 8))


def fill(engine: Engine, *, rows: int, seed: int = 7) -> dict[str, int]:
    """Insert `rows` scans (and their verdicts, reviews, users, runs); counts per table."""
    rng = random.Random(seed)
    moment = datetime.now(UTC)
    versions = [
        {
            "id": number,
            "version": name,
            "artifact_path": f"/srv/models/{name}/model.keras",
            "checksum": f"{number:064x}",
            "backbone": "vgg16",
            "classes": ["NORMAL", "PNEUMONIA"],
            "positive_class": "PNEUMONIA",
            "input_size": 224,
            "threshold": 0.38 + 0.02 * number,
            "metrics": {"auc": 0.95 + 0.005 * number, "gate": {"passed": True}},
            "status": "active" if number == len(VERSIONS) else "retired",
            "created_at": moment - timedelta(days=day, hours=3),
            "promoted_at": moment - timedelta(days=day),
        }
        for number, (name, day) in enumerate(VERSIONS, start=1)
    ]
    starts = [moment - timedelta(days=day) for _, day in VERSIONS]
    ages = sorted((rng.uniform(0, DAYS * 86400.0) for _ in range(rows)), reverse=True)
    scans: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    reviews: list[dict[str, Any]] = []
    for scan_id, age_s in enumerate(ages, start=1):
        received = moment - timedelta(seconds=age_s)
        status = _status(rng, timedelta(seconds=age_s))
        dicom = rng.random() < 0.6
        finished = received + timedelta(seconds=rng.uniform(0.5, 8.0))
        scan: dict[str, Any] = {
            "id": scan_id,
            "sha256": f"{rng.getrandbits(256):064x}",
            "source_path": f"inbox/{'1.2.826.0.1.3680043.8.498.' if dicom else 'film_'}"
            f"{scan_id}.{'dcm' if dicom else 'jpeg'}",
            "stored_path": None,
            "format": "dicom" if dicom else "jpeg",
            "size_bytes": rng.randint(300_000, 12_000_000),
            "sop_instance_uid": f"1.2.826.0.1.3680043.8.498.{scan_id}" if dicom else None,
            "study_instance_uid": f"1.2.826.0.1.3680043.8.499.{scan_id // 2}" if dicom else None,
            "modality": rng.choice(["CR", "DX"]) if dicom else None,
            "body_part": "CHEST" if dicom else None,
            "view_position": rng.choices(["PA", "AP", "LL"], [70, 25, 5])[0] if dicom else None,
            "patient_ref": f"{rng.getrandbits(64):016x}" if dicom else None,
            "status": status,
            "attempts": 1 if status != "queued" else 0,
            "error": None,
            "error_code": None,
            "received_at": received,
            "queued_at": received + timedelta(milliseconds=500),
            "claimed_at": None if status == "queued" else received + timedelta(seconds=0.6),
            "claimed_by": None if status == "queued" else "worker-1@screening",
            "finished_at": finished if status in ("done", "rejected", "failed") else None,
            "updated_at": finished,
            "report_status": None,
            "report_attempts": 0,
            "heatmap_status": None,
        }
        if status == "rejected":
            scan["error_code"] = rng.choice(["not_a_chest", "unsupported_modality", "too_large"])
            scan["error"] = "out of scope; see the remedy"
        elif status == "failed":
            scan["error_code"] = rng.choice(["unreadable", "truncated", "decode_failed"])
            scan["error"] = "cannot decode; see the remedy"
        if status in ("done", "rejected", "failed"):
            folder = "archive" if status == "done" else "quarantine"
            scan["stored_path"] = f"{folder}/{received:%Y/%m/%d}/{scan['sha256']}"
        if status == "done":
            in_service = max(i for i, start in enumerate(starts) if start <= received or i == 0)
            screened_by = [in_service]
            if in_service + 1 < len(VERSIONS) and rng.random() < 0.03:
                screened_by.append(in_service + 1)  # screened again by a later model
            for index in screened_by:
                version = versions[index]
                probability = _probability(rng)
                at = finished if index == in_service else starts[index] + timedelta(hours=1)
                predictions.append(
                    {
                        "id": len(predictions) + 1,
                        "scan_id": scan_id,
                        "model_version_id": version["id"],
                        "label": "PNEUMONIA" if probability >= version["threshold"] else "NORMAL",
                        "probability": probability,
                        "probabilities": {"NORMAL": 1 - probability, "PNEUMONIA": probability},
                        "threshold": version["threshold"],
                        "inference_ms": rng.uniform(40, 400),
                        "batch_size": rng.choice([1, 2, 4, 8, 16]),
                        "inference_precision": "float32",
                        "worker": f"worker-{rng.randint(1, 2)}@screening",
                        "created_at": at,
                    }
                )
            flagged = predictions[-1]["label"] == "PNEUMONIA"
            scan["heatmap_status"] = "done" if flagged else None
            if dicom:
                scan["report_status"] = rng.choices(["sent", "failed", "pending"], [97, 1, 2])[0]
                scan["report_attempts"] = 1
            if rng.random() < 0.01:
                reviews.append(
                    {
                        "scan_id": scan_id,
                        "label": rng.choices(
                            [predictions[-1]["label"], "NORMAL", "UNUSABLE"], [85, 10, 5]
                        )[0],
                        "reviewer_id": 1,
                        "reviewed_at": finished + timedelta(hours=rng.uniform(1, 48)),
                        "prediction_id": predictions[-1]["id"],
                        "model_version_id": predictions[-1]["model_version_id"],
                        "probability": predictions[-1]["probability"],
                    }
                )
        scans.append(scan)
    users = [{"name": "rita", "role": "reader", "created_at": moment}]
    runs = [
        {
            "trigger": "nightly",
            "status": rng.choices(["skipped", "succeeded", "failed"], [80, 18, 2])[0],
            "started_at": moment - timedelta(days=day, hours=-2),
            "duration_s": rng.uniform(5, 900),
            "metrics": {},
            "log": "",
        }
        for day in range(DAYS)
    ]
    with engine.begin() as connection:
        connection.execute(insert(ModelVersion), versions)
        connection.execute(insert(User), users)
        for table, table_rows in (
            (Scan, scans),
            (Prediction, predictions),
            (Review, reviews),
            (TrainingRun, runs),
        ):
            for chunk in _chunks(table_rows):
                connection.execute(insert(table), chunk)
        if engine.dialect.name == "postgresql":
            # Rows inserted with their ids leave the sequences behind: catch them up, so
            # that the app's own inserts (the `shared` account on sign-in) find free ids.
            for table in ("scans", "predictions", "model_versions"):
                catch_up = f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: E501, S608 - our own table names
                connection.execute(text(catch_up))
    return {
        "scans": len(scans),
        "predictions": len(predictions),
        "reviews": len(reviews),
        "model_versions": len(versions),
        "training_runs": len(runs),
    }


# --- the databases --------------------------------------------------------------------


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    """A fresh SQLite file."""
    yield f"sqlite:///{workdir / 'results.db'}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """The scratch database on the PostgreSQL server, created now and dropped after."""
    server = make_url(POSTGRES_URL)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {SCRATCH_DATABASE}"))
        try:
            yield server.set(database=SCRATCH_DATABASE).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE} WITH (FORCE)"))
    finally:
        admin.dispose()


# --- timing ---------------------------------------------------------------------------


def sign_in(client: TestClient) -> None:
    """Through the form, with the shared password, as a person would."""
    token = _TOKEN.search(client.get("/login").text)
    assert token, "the sign-in form has no form token"
    response = client.post(
        "/login",
        data={"name": "", "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text


def time_pages(client: TestClient, runs: int) -> list[dict[str, Any]]:
    """Each page once to warm up, then `runs` times; milliseconds and what it returned."""
    figures = []
    for page in pages():
        warm = client.get(page.url)
        assert warm.status_code == 200, (page.url, warm.status_code, warm.text[:300])
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(page.url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, page.url
        figures.append(
            {
                "page": page.name,
                "url": page.url,
                "median_ms": statistics.median(times),
                "min_ms": min(times),
                "max_ms": max(times),
                "runs_ms": times,
                "bytes": len(response.content),
                "csv_rows": response.text.count("\n") - 1 if ".csv" in page.url else None,
            }
        )
        print(f"  {page.name}: median {statistics.median(times):.0f} ms", flush=True)
    return figures


def measure(url: str, workdir: Path, *, rows: int, runs: int, revision: str) -> dict[str, Any]:
    """Migrate, fill, vacuum (PostgreSQL), then time every page on `url`."""
    engine = make_engine(url)
    try:
        upgrade(engine, revision)
        started = time.perf_counter()
        counts = fill(engine, rows=rows)
        fill_s = time.perf_counter() - started
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE"))
        print(f"{engine.dialect.name}: {counts} in {fill_s:.1f} s", flush=True)
        settings = load_settings(
            database_url=url,
            broker_url=f"sqla+sqlite:///{workdir / 'broker.db'}",
            inbox=workdir / "inbox",
            archive=workdir / "archive",
            quarantine=workdir / "quarantine",
            model_dir=workdir / "models",
            pseudonym_key="k" * 32,
            web_secret="s" * 32,
            web_password=PASSWORD,
        )
        with TestClient(create_app(settings, engine=engine)) as client:
            sign_in(client)
            figures = time_pages(client, runs)
        return {
            "database": engine.dialect.name,
            "server_version": ".".join(map(str, engine.dialect.server_version_info or ())),
            "schema_revision": current_revision(engine),
            "rows": counts,
            "fill_s": fill_s,
            "pages": figures,
        }
    finally:
        engine.dispose()


# --- the report -----------------------------------------------------------------------


def markdown(stamp: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The results file: how it was run, then one table per database."""
    lines = [
        "# Web pages on 100,000 results",
        "",
        f"Recorded {stamp['recorded']} at commit {stamp['revision']} with:",
        "",
        "```",
        stamp["command"],
        "```",
        "",
        f"- Machine: {stamp['machine']}",
        f"- Load average when the run started (other work on the machine): {stamp['load']}",
        f"- The real app in-process (Starlette TestClient, signed in); each page fetched "
        f"once to warm up, then {stamp['runs']} times: median, fastest and slowest in ms.",
        "",
    ]
    for result in results:
        counts = ", ".join(f"{n:,} {table}" for table, n in result["rows"].items())
        lines += [
            f"## {result['database']} {result['server_version']}".rstrip(),
            "",
            f"Schema revision {result['schema_revision']}; {counts}, "
            f"inserted in {result['fill_s']:.1f} s.",
            "",
            "| page | median ms | min ms | max ms | size |",
            "|---|---|---|---|---|",
        ]
        for page in result["pages"]:
            size = f"{page['bytes'] / 1024:.0f} KiB"
            if page["csv_rows"] is not None:
                size += f", {page['csv_rows']:,} rows"
            lines.append(
                f"| {page['page']} (`{page['url']}`) | {page['median_ms']:.0f} | "
                f"{page['min_ms']:.0f} | {page['max_ms']:.0f} | {size} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="scans to insert")
    parser.add_argument("--runs", type=int, default=5, help="timed fetches of each page")
    parser.add_argument("--revision", default="head", help="migrate only this far")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "web_pages.md")
    args = parser.parse_args()
    stamp = {
        "recorded": now(),
        "revision": git_revision(),
        "machine": machine(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "runs": args.runs,
        "command": " ".join([".venv/bin/python", *sys.argv]),
    }
    results = []
    for name in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="cxr-bench-web-") as tmp:
            workdir = Path(tmp)
            database = sqlite_database(workdir) if name == "sqlite" else postgres_database()
            with database as url:
                results.append(
                    measure(url, workdir, rows=args.rows, runs=args.runs, revision=args.revision)
                )
    slow = [
        f"{r['database']}: {p['page']}"
        for r in results
        for p in r["pages"]
        if p["median_ms"] > SLOW_MS
    ]
    if slow:
        print(f"over {SLOW_MS:.0f} ms: {'; '.join(slow)}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(markdown(stamp, results))
    args.output.with_suffix(".json").write_text(
        json.dumps({**stamp, "results": results}, indent=2) + "\n"
    )
    print(f"wrote {args.output} and {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
