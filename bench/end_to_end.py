"""Drop-to-result throughput and latency of `cxr-screen up` against the seed's naive loop.

Same run, same 60 full-resolution chest X-rays, same VGG16 model (ImageNet base from the
shared weights file, Flatten + Dense head, preprocessing inside):

- naive: what the seed tutorial does per image: load it with Keras's image loader at
  224 x 224, `model.predict` on a batch of one, insert a row (SQLite, one commit each);
- raw: `predict_on_batch` alone on pre-decoded images (the ceiling);
- service: `cxr-screen up` on embedded defaults in a temporary site (watcher, worker,
  beat); files are dropped into the inbox (temporary name, then rename) and timed until
  their result rows are `done`. First one file on the idle service (single-scan
  latency), then all the files at once, each of the 60 as 3 distinct copies by default
  (throughput from first drop to last result, and the steady rate once the first batch
  is through).

    .venv/bin/python bench/end_to_end.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Run as a script: make the repository importable (bench.*) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now
from bench.worker_throughput import (
    SIZE,
    bench_inputs,
    build_artifact,
    decoded_images,
    distinct_copies,
    raw_rate,
    register_active,
    warm_up_files,
)
from db.migrate import upgrade
from db.models import HeatmapStatus, Prediction, Scan, ScanStatus
from db.session import make_engine, make_session_factory
from worker.accelerator import PRECISIONS, Precision


def naive_rate(artifact: Path, files: list[Path], workdir: Path, passes: int = 2) -> float:
    """Images per second of the seed's loop: load, predict one, insert one row (float32,
    as the seed runs it). The best of `passes` passes over `files`: the baseline gets
    the benefit of this shared machine's noise, not the service."""
    import keras

    model = keras.models.load_model(artifact, compile=False)
    db = sqlite3.connect(workdir / "naive.db")
    db.execute("CREATE TABLE results (path TEXT, label TEXT, probability REAL)")
    warm = keras.utils.img_to_array(keras.utils.load_img(files[0], target_size=(SIZE, SIZE)))
    model.predict(warm[None], verbose=0)  # the seed also pays this once
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        for path in files:
            image = keras.utils.load_img(path, target_size=(SIZE, SIZE))
            x = keras.utils.img_to_array(image)[None]
            probabilities = model.predict(x, verbose=0)[0]
            label = "PNEUMONIA" if probabilities[1] >= 0.5 else "NORMAL"
            db.execute(
                "INSERT INTO results VALUES (?, ?, ?)", (str(path), label, float(probabilities[1]))
            )
            db.commit()
        best = max(best, len(files) / (time.perf_counter() - started))
    db.close()
    return best


def _drop(source: Path, inbox: Path, name: str) -> None:
    partial = inbox / f".{name}.part"
    shutil.copyfile(source, partial)
    partial.rename(inbox / name)


@dataclass(frozen=True, slots=True)
class ServiceFigures:
    """What `service_figures` measured."""

    latency_s: float  # one file dropped on the idle service -> its result row
    throughput: float  # scans/s, first drop -> last result row
    steady: float  # scans/s between the first and the last batch's results
    model_busy: float  # share of that time the worker spent in the forward pass
    heatmaps: int = 0  # heatmaps made for the timed scans (CXR_HEATMAPS)


def steady_rate(finished: list[datetime]) -> float:
    """Scans per second once the pipeline is full: the scans finished after the first
    batch, over the time from the first batch's results to the last ones. The start
    (a file's way through the watcher, the batch window, the first batch) is latency,
    measured on its own; what a stream of scans sees is this rate."""
    stamps = sorted(finished)
    first = [t for t in stamps if t == stamps[0]]  # a batch's rows share one timestamp
    span = (stamps[-1] - stamps[0]).total_seconds()
    return (len(stamps) - len(first)) / span if span > 0 else float("nan")


def model_busy(finished: list[tuple[datetime, float]]) -> float:
    """Share of the steady span (see `steady_rate`) the worker spent in the model's
    forward pass, from each prediction's recorded `inference_ms` (its batch's forward
    time over the batch size). Unlike a ratio to the raw rate measured minutes apart,
    it does not move with the machine's speed: one minus it is the pipeline's overhead
    (claim, decode, store, broker)."""
    rows = sorted(finished)
    start, end = rows[0][0], rows[-1][0]
    forward_ms = sum(ms for t, ms in rows if t != start)
    span = (end - start).total_seconds()
    return forward_ms / 1000 / span if span > 0 else float("nan")


def service_figures(
    artifact: Path,
    checksum: str,
    files: list[Path],
    workdir: Path,
    *,
    precision: Precision,
    batch_size: int,
    heatmaps: str = "off",
) -> ServiceFigures:
    """Latency and throughput of `cxr-screen up` on embedded defaults but for
    CXR_PRECISION, CXR_BATCH_SIZE and CXR_HEATMAPS."""
    site = workdir / "site"
    site.mkdir()
    engine = make_engine(f"sqlite:///{site / 'var' / 'cxr-screen.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    register_active(factory, artifact, checksum)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CXR_")},
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CXR_PSEUDONYM_KEY": "bench-pseudonym-key-0123456789abcdef",
        "CXR_PRECISION": precision,
        "CXR_BATCH_SIZE": str(batch_size),
        "CXR_HEATMAPS": heatmaps,
    }
    log_path = workdir / "up.log"
    log = log_path.open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "cxr_screen.cli", "up"],
        cwd=site,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    inbox = site / "inbox"

    def done_count() -> int:
        with factory() as session:
            return (
                session.scalar(
                    select(func.count()).select_from(Scan).where(Scan.status == ScanStatus.DONE)
                )
                or 0
            )

    def wait_for(count: int, timeout: float) -> float:
        # A count every 50 ms: cheap enough not to take CPU from the service it times.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done_count() >= count:
                return time.perf_counter()
            time.sleep(0.05)
        raise TimeoutError(f"{count} results not there after {timeout}s; see {log_path}")

    try:
        deadline = time.monotonic() + 180
        while b"ready." not in log_path.read_bytes():
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError(f"the service did not start; see {log_path}")
            time.sleep(0.2)
        # Warm-up: the worker loads the model on its first batch, a full one (CXR_BATCH_SIZE,
        # default CXR_BATCH_SIZE), so the batch shape is traced outside the timing too.
        (workdir / "warm-up").mkdir()
        *warm, single = warm_up_files(files, workdir / "warm-up", batch_size + 1)
        for path in warm:
            _drop(path, inbox, path.name)
        wait_for(len(warm), 300)
        if heatmaps != "off":
            # The warm-up batch's heatmaps (and the explainer's one-off build) must not
            # sit in front of the single scan.
            wait_for_heatmaps(factory, 300)
        time.sleep(2)
        # Single scan on the idle service: one more distinct file.
        started = time.perf_counter()
        _drop(single, inbox, single.name)
        latency = wait_for(len(warm) + 1, 120) - started
        time.sleep(2)
        started = time.perf_counter()
        for path in files:
            _drop(path, inbox, path.name)
        finished = wait_for(len(warm) + 1 + len(files), 1800)
        throughput = len(files) / (finished - started)
        if heatmaps != "off":
            # Heatmaps come after their batch's verdicts: the last ones are waited for.
            wait_for_heatmaps(factory, 600)
        with factory() as session:
            names = {p.name for p in files}
            made = session.scalars(
                select(Scan.source_path).where(Scan.heatmap_status == HeatmapStatus.DONE)
            ).all()
            done = session.execute(
                select(Scan.source_path, Scan.finished_at, Prediction.inference_ms)
                .join(Prediction, Prediction.scan_id == Scan.id)
                .where(Scan.status == ScanStatus.DONE)
            ).all()
            rows = [
                (row.finished_at, row.inference_ms or 0.0)
                for row in done
                if Path(row.source_path).name in names and row.finished_at is not None
            ]
    finally:
        os.killpg(service.pid, 15)
        service.wait(120)
        log.close()
        engine.dispose()
    made_here = sum(Path(path).name in names for path in made)
    return ServiceFigures(
        latency, throughput, steady_rate([t for t, _ in rows]), model_busy(rows), made_here
    )


def wait_for_heatmaps(factory: sessionmaker[Session], timeout: float) -> None:
    """Until no heatmap is pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(Scan)
                .where(Scan.heatmap_status == HeatmapStatus.PENDING)
            )
        if not pending:
            return
        time.sleep(0.2)
    raise TimeoutError(f"heatmaps still pending after {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument(
        "--results", type=Path, default=REPO / "bench" / "results" / "end_to_end.md"
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=3,
        help="drop each file this many times (distinct copies) so the run reaches steady state",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="the service's CXR_PRECISION, and the raw rate's (the naive loop stays float32)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="the service's CXR_BATCH_SIZE, and the raw rate's batch",
    )
    parser.add_argument(
        "--heatmaps",
        choices=("off", "flagged", "all"),
        default="off",
        help="the service's CXR_HEATMAPS; other than off, the row goes to "
        "bench/results/heatmaps.md (unless --results is given)",
    )
    parser.add_argument("--log", type=Path, help="keep the service's log here")
    args = parser.parse_args()
    heatmap_table = args.heatmaps != "off" or args.results.name == "heatmaps.md"
    if args.heatmaps != "off" and args.results.name == "end_to_end.md":
        args.results = args.results.with_name("heatmaps.md")
    files, weights = bench_inputs(args.shared)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cxr-e2e-") as tmp:
        workdir = Path(tmp)
        artifact = workdir / "models" / "bench-vgg16" / "model.keras"
        checksum = build_artifact(weights, artifact)
        naive = naive_rate(artifact, files, workdir)
        print(f"naive seed loop: {naive:.2f} images/s", flush=True)
        images = decoded_images(files)

        def raw_now() -> float:
            rate = raw_rate(artifact, images, args.batch_size, 3, precision=args.precision)[0]
            print(
                f"raw predict_on_batch ({args.batch_size}, {args.precision}): {rate:.2f} images/s",
                flush=True,
            )
            return rate

        raw_before = raw_now()
        dropped = files
        if args.copies > 1:
            (workdir / "copies").mkdir()
            dropped = distinct_copies(files, workdir / "copies", args.copies)
        figures = service_figures(
            artifact,
            checksum,
            dropped,
            workdir,
            precision=args.precision,
            batch_size=args.batch_size,
            heatmaps=args.heatmaps,
        )
        if args.log:
            shutil.copy(workdir / "up.log", args.log)
        # This shared machine's speed drifts by 10-15 % over minutes: the ceiling is
        # measured on both sides of the service run and the mean taken.
        raw_after = raw_now()
    raw = (raw_before + raw_after) / 2
    rate, steady = figures.throughput, figures.steady
    print(
        f"service: single scan {figures.latency_s:.2f} s; {len(dropped)} scans at "
        f"{rate:.2f} scans/s = {rate / naive:.2f}x naive, {rate / raw:.3f} of raw; "
        f"steady {steady:.2f} scans/s = {steady / naive:.2f}x naive, {steady / raw:.3f} of raw; "
        f"model busy {figures.model_busy:.3f} of the steady span",
        flush=True,
    )
    if heatmap_table:
        _record_heatmap_row(args, figures, len(dropped), naive, raw, load_at_start)
        return
    row = (
        f"| {now()} | {git_revision()} | {load_at_start:.1f} | {args.precision} | "
        f"{args.batch_size} | "
        f"{len(dropped)} | {naive:.2f} | {raw:.2f} ({raw_before:.2f}, {raw_after:.2f}) | "
        f"{rate:.2f} ({rate / naive:.2f}x, {rate / raw:.3f}) | "
        f"{steady:.2f} ({steady / naive:.2f}x, {steady / raw:.3f}) | {figures.model_busy:.3f} | "
        f"{figures.latency_s:.2f} |\n"
    )
    if not args.results.exists():
        args.results.write_text("# End to end: drop to result row\n")
    text = args.results.read_text()
    # One table per machine: figures from different CPUs are not comparable.
    table = TABLE.format(machine=machine())
    if table.splitlines()[0] not in text:
        text = text.rstrip("\n") + "\n\n" + table + COLUMNS
    args.results.write_text(text + row)


def _record_heatmap_row(
    args: argparse.Namespace,
    figures: ServiceFigures,
    scans: int,
    naive: float,
    raw: float,
    load_at_start: float,
) -> None:
    """One row of bench/results/heatmaps.md: the cost of CXR_HEATMAPS on this run."""
    rate, steady = figures.throughput, figures.steady
    row = (
        f"| {now()} | {git_revision()} | {load_at_start:.1f} | {args.heatmaps} | {scans} | "
        f"{figures.heatmaps} | {raw:.2f} | {rate:.2f} ({rate / raw:.3f}) | "
        f"{steady:.2f} ({steady / raw:.3f}) | {figures.model_busy:.3f} | "
        f"{figures.latency_s:.2f} |\n"
    )
    if not args.results.exists():
        args.results.write_text("# Heatmaps: what CXR_HEATMAPS costs end to end\n")
    text = args.results.read_text()
    table = HEATMAP_TABLE.format(machine=machine())
    if table.splitlines()[0] not in text:
        text = text.rstrip("\n") + "\n\n" + table + HEATMAP_COLUMNS
    args.results.write_text(text + row)


HEATMAP_TABLE = """## On {machine}

Command: `.venv/bin/python bench/end_to_end.py --heatmaps off|flagged|all` (the end-to-end
bench: 180 scans, VGG16 224 px float32, batch 16, embedded defaults; see
end_to_end.md), one run per mode, back to back. Heatmaps made: of the timed scans
(`flagged` depends on the bench model's untrained head: which verdicts are positive).
Throughput and steady in scans/s (fraction of raw in brackets). Single-scan latency:
one file dropped on the idle service (the warm-up's heatmaps done) until its result
row; a heatmap is made after the verdict is stored, so with `all` it follows the result
and does not delay it. Heatmaps are waited for before the run ends (the last batch's
come after its results).

"""
HEATMAP_COLUMNS = (
    "| when | commit | load | heatmaps | scans | heatmaps made | raw images/s "
    "| service scans/s | steady scans/s | model busy | single-scan latency s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)


TABLE = """## On {machine}

Command: `.venv/bin/python bench/end_to_end.py [--precision P] [--batch-size B]` (each
of the 60 files dropped 3 times as distinct copies, 180 scans). Model: VGG16 (shared
ImageNet weights) + Flatten + Dense(2), 224 px. Naive: the seed's loop in float32, best of
2 passes. Raw: `predict_on_batch` in the service's precision and batch size, best of 3,
measured before and after the service run (in brackets) and averaged.
Service: `cxr-screen up` on embedded defaults (SQLite database and broker, 500 ms batch
window) but CXR_PRECISION and CXR_BATCH_SIZE (default 16), warmed up with one full batch.
Throughput: first drop to last result row. Steady: scans finished after the first batch
over the time from the first batch's results to the last. In brackets: x naive, fraction
of raw. Model busy: the share of the steady span the worker spent in the forward pass
(from each prediction's recorded inference time; immune to the machine's drift). Targets:
service >= 2x naive, steady >= 0.85 of raw. Load: 1-minute load average at start.

"""
COLUMNS = (
    "| when | commit | load | precision | batch | scans | naive images/s | raw images/s "
    "| service scans/s | steady scans/s | model busy | single-scan latency s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


if __name__ == "__main__":
    main()
