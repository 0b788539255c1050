"""Watcher latency on an idle system: file landed -> scan row, and -> screening task sent.

Usage (from the repository root):

    .venv/bin/python bench/watcher_latency.py [--files N] [--size-kb K] [--output FILE]

Runs `cxr-screen watch` as a process, exactly as deployed, for every combination of
stack (SQLite + embedded broker; PostgreSQL + Redis), observer (inotify; polling, as
for a network share) and CXR_STABLE_SECONDS (2.0, the default; 0.2). Files are dropped
one at a time, each only after the previous one's task went out and a random idle
pause (an idle system, arrivals out of step with the 1 s polling cycle), by
a writer that opens, writes and closes them (as `cp` or a DICOM receiver does).
"Landed" is the wall clock just after close(); the scan row's `received_at` and its
`queued_at` (stamped once the broker accepted the task) give the two latencies.
PostgreSQL comes from CXR_BENCH_POSTGRES_URL (default: the test server); Redis is a
private redis-server on a free port. Results go to bench/results/watcher.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from bench.common import git_revision, machine, now  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import Scan  # noqa: E402
from db.session import make_engine, make_session_factory  # noqa: E402

POSTGRES_URL = os.environ.get(
    "CXR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CLI = str(Path(sys.executable).with_name("cxr-screen"))


@dataclass(frozen=True)
class Config:
    """One row of the results table."""

    stack: str
    polling: bool
    stable_seconds: float

    @property
    def observer(self) -> str:
        return "polling (1 s)" if self.polling else "inotify"


@dataclass(frozen=True)
class Row:
    """Latencies (seconds) of one configuration."""

    config: Config
    to_row: list[float]
    to_task: list[float]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _redis(workdir: Path) -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


@contextmanager
def _database(stack: str, workdir: Path) -> Iterator[str]:
    if stack == "embedded":
        yield f"sqlite:///{workdir / 'cxr.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        separator = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _run(config: Config, *, files: int, size: int, workdir: Path) -> Row:
    with _database(config.stack, workdir) as url, _broker(config, workdir) as broker:
        engine = make_engine(url)
        upgrade(engine)
        factory = make_session_factory(engine)
        inbox = workdir / "inbox"
        inbox.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
        env.update(
            CXR_DATABASE_URL=url,
            CXR_BROKER_URL=broker,
            CXR_INBOX=str(inbox),
            CXR_ARCHIVE=str(workdir / "archive"),
            CXR_QUARANTINE=str(workdir / "quarantine"),
            CXR_STABLE_SECONDS=str(config.stable_seconds),
            CXR_WATCH_POLLING=str(config.polling).lower(),
        )
        log_path = workdir / "watch.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [CLI, "watch"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            _wait(lambda: "watching " in log_path.read_text(), 60, "the watcher to start")
            to_row: list[float] = []
            to_task: list[float] = []
            # The first file pays for the broker connection: a warm-up, not measured.
            for index in range(files + 1):
                content = os.urandom(size)
                sha = hashlib.sha256(content).hexdigest()
                with (inbox / f"IM{index:04d}.dcm").open("wb") as handle:
                    handle.write(content)
                landed = time.time()
                scan = _wait_sent(factory, sha)
                if index:
                    assert scan.queued_at is not None
                    to_row.append(scan.received_at.timestamp() - landed)
                    to_task.append(scan.queued_at.timestamp() - landed)
                # Idle between files, for a random while: arrivals must not fall into
                # step with the polling observer's 1 s cycle.
                time.sleep(random.uniform(0.3, 1.3))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            engine.dispose()
    return Row(config, to_row, to_task)


@contextmanager
def _broker(config: Config, workdir: Path) -> Iterator[str]:
    """The embedded SQLite broker, or a private Redis."""
    if config.stack == "embedded":
        yield f"sqla+sqlite:///{workdir / 'broker.db'}"
        return
    with _redis(workdir) as url:
        yield url


def _wait_sent(factory: sessionmaker[Session], sha: str) -> Scan:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with factory() as session:
            scan = session.scalars(select(Scan).where(Scan.sha256 == sha)).one_or_none()
        if scan is not None and scan.queued_at is not None:
            return scan
        time.sleep(0.01)
    raise TimeoutError(f"scan {sha[:12]} was not sent within 60 s")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def _ms(values: list[float]) -> tuple[str, str]:
    median = statistics.median(values) * 1000
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] * 1000
    return f"{median:.0f}", f"{p95:.0f}"


def _report(rows: list[Row], *, files: int, size_kb: int, command: str) -> str:
    lines = [
        "# Watcher latency",
        "",
        f"Recorded {now()} at commit {git_revision()} with:",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: {machine()}; `nproc` = {os.cpu_count()}",
        f"- Load average when the run started (other work on the machine): "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- {files} files of {size_kb} KB per configuration, one at a time (the next one "
        "only after the previous task went out, then 0.3-1.3 s idle at random), written in "
        "place with open/write/close; CXR_BATCH_SIZE 16 and CXR_BATCH_WAIT_MS 500 (defaults).",
        "- landed = wall clock right after close(); row = the scan's `received_at`; task = "
        "its `queued_at`, stamped once the broker accepted the task.",
        "",
        "| stack | observer | CXR_STABLE_SECONDS | landed -> row, median ms | p95 ms "
        "| landed -> task sent, median ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        row_median, row_p95 = _ms(row.to_row)
        task_median, task_p95 = _ms(row.to_task)
        stack = (
            "SQLite + embedded broker" if row.config.stack == "embedded" else "PostgreSQL + Redis"
        )
        lines.append(
            f"| {stack} | {row.config.observer} | {row.config.stable_seconds:g} | {row_median} "
            f"| {row_p95} | {task_median} | {task_p95} |"
        )
    lines += [
        "",
        "Reading the figures:",
        "",
        "- inotify: the writer's close (IN_CLOSE_WRITE) marks the file complete, so it is "
        "taken at once whatever CXR_STABLE_SECONDS says; the row follows in milliseconds "
        "(hash + one insert). CXR_STABLE_SECONDS matters on inotify only for writers that "
        "never close or rename (rare locally).",
        "- polling (CXR_WATCH_POLLING=true, for network shares, where no close event "
        "arrives): up to one polling cycle (1 s) to see the file, then CXR_STABLE_SECONDS "
        "of no change before it is taken.",
        "- landed -> task sent adds the batch window: a lone file waits CXR_BATCH_WAIT_MS "
        "(500 ms) for company before its task goes out; lower it for lower latency, at the "
        "cost of smaller batches in a slow trickle. A full batch (CXR_BATCH_SIZE) goes out "
        "without waiting.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every configuration and write the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=15, help="measured files per configuration")
    parser.add_argument("--size-kb", type=int, default=2048, help="size of each file")
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/watcher.md")
    parser.add_argument(
        "--stacks", default="embedded,redis+postgresql", help="comma-separated stacks to run"
    )
    args = parser.parse_args()
    rows: list[Row] = []
    for stack in args.stacks.split(","):
        for polling in (False, True):
            for stable in (2.0, 0.2):
                config = Config(stack, polling, stable)
                workdir = Path(tempfile.mkdtemp(prefix="cxr-watch-bench-"))
                try:
                    row = _run(config, files=args.files, size=args.size_kb * 1024, workdir=workdir)
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                rows.append(row)
                task_median, _ = _ms(row.to_task)
                print(f"{config}: landed -> task median {task_median} ms", flush=True)
    command = ".venv/bin/python bench/watcher_latency.py " + " ".join(sys.argv[1:])
    report = _report(rows, files=args.files, size_kb=args.size_kb, command=command.strip())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
