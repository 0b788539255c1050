"""Drop-to-result throughput and latency of `cxr-screen up` against the seed's naive loop.

Same run, same 60 full-resolution chest X-rays, same VGG16 model (ImageNet base from the
shared weights file, Flatten + Dense head, preprocessing inside):

- naive: what the seed tutorial does per image: load it with Keras's image loader at
  224 x 224, `model.predict` on a batch of one, insert a row (SQLite, one commit each);
- raw: `predict_on_batch` alone on pre-decoded images (the ceiling);
- service: `cxr-screen up` on embedded defaults in a temporary site (watcher, worker,
  beat); files are dropped into the inbox (temporary name, then rename) and timed until
  their result rows are `done`. First one file on the idle service (single-scan
  latency), then all 60 at once (throughput, first drop to last result).

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
from pathlib import Path

# Run as a script: make the repository importable (bench.*) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now
from bench.worker_throughput import (
    SIZE,
    build_artifact,
    raw_rate,
    register_active,
    warm_up_file,
)
from db.migrate import upgrade
from db.models import Scan, ScanStatus
from db.session import make_engine, make_session_factory


def naive_rate(artifact: Path, files: list[Path], workdir: Path) -> float:
    """Images per second of the seed's loop: load, predict one, insert one row."""
    import keras

    model = keras.models.load_model(artifact, compile=False)
    db = sqlite3.connect(workdir / "naive.db")
    db.execute("CREATE TABLE results (path TEXT, label TEXT, probability REAL)")
    warm = keras.utils.img_to_array(keras.utils.load_img(files[0], target_size=(SIZE, SIZE)))
    model.predict(warm[None], verbose=0)  # the seed also pays this once
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
    elapsed = time.perf_counter() - started
    db.close()
    return len(files) / elapsed


def _drop(source: Path, inbox: Path, name: str) -> None:
    partial = inbox / f".{name}.part"
    shutil.copyfile(source, partial)
    partial.rename(inbox / name)


def service_figures(
    artifact: Path, checksum: str, files: list[Path], workdir: Path
) -> tuple[float, float]:
    """(single-scan latency s, throughput scans/s) of `cxr-screen up` on embedded defaults."""
    site = workdir / "site"
    site.mkdir()
    engine = make_engine(f"sqlite:///{site / 'var' / 'cxr-screen.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    register_active(factory, artifact, checksum)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CXR_")},
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CXR_PSEUDONYM_KEY": "bench",
    }
    log_path = workdir / "up.log"
    log = log_path.open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up"],
        cwd=site,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    inbox = site / "inbox"

    def done_count() -> int:
        with factory() as session:
            return len(
                list(session.scalars(Scan.__table__.select().where(Scan.status == ScanStatus.DONE)))
            )

    def wait_for(count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done_count() >= count:
                return time.perf_counter()
            time.sleep(0.02)
        raise TimeoutError(f"{count} results not there after {timeout}s; see {log_path}")

    try:
        deadline = time.monotonic() + 180
        while b"ready." not in log_path.read_bytes():
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError(f"the service did not start; see {log_path}")
            time.sleep(0.2)
        # Warm-up: the worker loads the model on its first batch.
        _drop(warm_up_file(files[0], workdir), inbox, "warm-up.jpeg")
        wait_for(1, 300)
        time.sleep(2)
        # Single scan on the idle service: a second distinct file.
        single = workdir / "single.jpeg"
        single.write_bytes(warm_up_file(files[1], workdir).read_bytes())
        started = time.perf_counter()
        _drop(single, inbox, "single.jpeg")
        latency = wait_for(2, 120) - started
        time.sleep(2)
        started = time.perf_counter()
        for path in files:
            _drop(path, inbox, path.name)
        finished = wait_for(2 + len(files), 900)
        throughput = len(files) / (finished - started)
    finally:
        os.killpg(service.pid, 15)
        service.wait(120)
        log.close()
        engine.dispose()
    return latency, throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument(
        "--results", type=Path, default=REPO / "bench" / "results" / "end_to_end.md"
    )
    args = parser.parse_args()
    files = sorted((args.shared / "data" / "chest_xray_fullres").rglob("*.jpeg"))
    weights = args.shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    if len(files) != 60 or not weights.is_file():
        raise SystemExit(
            f"need the 60 full-resolution JPEGs and the VGG16 weights under {args.shared}"
        )
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cxr-e2e-") as tmp:
        workdir = Path(tmp)
        artifact = workdir / "models" / "bench-vgg16" / "model.keras"
        checksum = build_artifact(weights, artifact)
        naive = naive_rate(artifact, files, workdir)
        print(f"naive seed loop: {naive:.2f} images/s", flush=True)
        raw = raw_rate(artifact, files, 16, 2)
        print(f"raw predict_on_batch (16): {raw:.2f} images/s", flush=True)
        latency, rate = service_figures(artifact, checksum, files, workdir)
    print(
        f"service: single scan {latency:.2f} s; {rate:.2f} scans/s = {rate / naive:.2f}x "
        f"naive, {rate / raw:.3f} of raw",
        flush=True,
    )
    row = (
        f"| {now()} | {git_revision()} | {load_at_start:.1f} | {naive:.2f} | {raw:.2f} | "
        f"{rate:.2f} | {rate / naive:.2f} | {rate / raw:.3f} | {latency:.2f} |\n"
    )
    if not args.results.exists():
        args.results.write_text(
            "# End to end: drop to result row\n\n"
            f"Machine: {machine()}.\n"
            "Command: `.venv/bin/python bench/end_to_end.py`. Model: VGG16 (shared ImageNet\n"
            "weights) + Flatten + Dense(2), 224 px. Files: the 60 shared full-resolution\n"
            "chest X-rays. Service: `cxr-screen up` on embedded defaults (SQLite database\n"
            "and broker), default settings (batch 16, 500 ms batch window). Targets:\n"
            "service >= 2x naive, >= 0.85 of raw. Load: 1-minute load average at start.\n\n"
            "| when | commit | load | naive images/s | raw images/s | service scans/s | "
            "x naive | of raw | single-scan latency s |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
        )
    with args.results.open("a") as out:
        out.write(row)


if __name__ == "__main__":
    main()
