"""One CPU screening worker against the raw `model.predict` rate of the same model.

Runs the production VGG16 classifier (ImageNet base from a weights file, the seed's
Flatten + Dense head; head weights do not change the compute) on the 60 shared
full-resolution chest X-rays:

- raw: the images decoded once up front, then only `predict_on_batch` at batch size B;
- worker: a real `cxr-screen worker` process on a real stack (embedded SQLite database and
  broker, or PostgreSQL + Redis) screening the same 60 files from scan rows: claim,
  decode (thread pool), predict, store, archive. Timed from the first task sent to the
  last scan done, after the model is loaded (a warm-up batch first).

    .venv/bin/python bench/worker_throughput.py --stack embedded --batch-size 16
    .venv/bin/python bench/worker_throughput.py --stack redis --batch-size 16

On a GPU host, `--precision` and `--xla` set both the raw model and the worker (as
`CXR_PRECISION` / `CXR_XLA` do), `--copies N` screens each file N times (each copy made
distinct by a JPEG comment segment, the pixels untouched) so that a run lasts long
enough to time, and `--decode-threads` sizes the worker's decode pool
(`CXR_DECODE_THREADS`). The decode column is the rate of the worker's decoder alone
on those threads: the most a worker can screen whatever the model.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

# The raw measurement runs in this process and the worker in another: neither may take
# the whole GPU at start (TensorFlow and JAX both would by default).
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Run as a script: make the repository importable (bench.common) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now
from db.migrate import upgrade
from db.models import ModelStatus, ModelVersion, Scan, ScanStatus
from db.scans import mark_sent, record_scan
from db.session import make_engine, make_session_factory, session_scope
from worker.accelerator import PRECISIONS, XLA_MODES, Precision, Xla, for_inference
from worker.celery_app import create_app
from worker.dispatch import send_batches
from worker.imaging import DecodeOptions
from worker.pipeline import ModelInput, Prepared, prepare_file
from worker.settings import Settings

SIZE = 224


def build_artifact(weights: Path, path: Path) -> str:
    """Save the production architecture with the real ImageNet base; return its sha256."""
    from trainer.backbones import get_backbone
    from trainer.model import build_classifier

    classifier = build_classifier(
        get_backbone("vgg16"), size=SIZE, n_classes=2, weights=weights, seed=0
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    classifier.model.save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def register_active(factory: sessionmaker[Session], artifact: Path, checksum: str) -> None:
    """Make the benchmark artifact the active model of a fresh database."""
    with session_scope(factory) as session:
        session.add(
            ModelVersion(
                version="bench-vgg16",
                artifact_path=str(artifact),
                checksum=checksum,
                backbone="vgg16",
                classes=["NORMAL", "PNEUMONIA"],
                positive_class="PNEUMONIA",
                input_size=SIZE,
                threshold=0.5,
                metrics={},
                status=ModelStatus.ACTIVE,
            )
        )


def bench_inputs(shared: Path) -> tuple[list[Path], Path]:
    """The 60 shared full-resolution JPEGs and the VGG16 weights file, or exit saying so."""
    files = sorted((shared / "data" / "chest_xray_fullres").rglob("*.jpeg"))
    weights = shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    if len(files) != 60 or not weights.is_file():
        raise SystemExit(f"need the 60 full-resolution JPEGs and the VGG16 weights under {shared}")
    return files, weights


def decoded_images(files: list[Path]) -> list[np.ndarray]:
    """The model inputs of `files`, decoded the way the worker decodes them."""
    model_input = ModelInput.of(SIZE, DecodeOptions())
    images = []
    for f in files:
        prepared = prepare_file(f, model_input)
        assert isinstance(prepared, Prepared), prepared
        images.append(prepared.image)
    return images


def decode_rate(files: list[Path], threads: int) -> float:
    """Files per second of the worker's decoder alone, on a pool of `threads`."""
    model_input = ModelInput.of(SIZE, DecodeOptions())
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda f: prepare_file(f, model_input), files[:threads]))  # warm-up
        started = time.perf_counter()
        results = list(pool.map(lambda f: prepare_file(f, model_input), files))
        elapsed = time.perf_counter() - started
    assert all(isinstance(r, Prepared) for r in results)
    return len(files) / elapsed


def raw_rate(
    artifact: Path,
    images: list[np.ndarray],
    batch_size: int,
    repeats: int,
    *,
    precision: Precision = "float32",
    xla: Xla = "auto",
) -> tuple[float, float, int]:
    """Images per second of `predict_on_batch` alone on pre-decoded inputs (best of
    `repeats`), with how far `precision` moves the probabilities from float32: the
    largest change of the positive class's probability (NaN when the model gave NaN),
    and how many labels flip at 0.5.
    """
    import keras

    loaded = keras.models.load_model(artifact, compile=False)
    model = for_inference(loaded, precision=precision, xla=xla)
    batches = [
        np.stack(images[i : i + batch_size]).astype(np.float32)
        for i in range(0, len(images), batch_size)
    ]
    model.predict_on_batch(batches[0])  # warm-up: graph tracing, allocations
    if len(batches[-1]) != batch_size:
        model.predict_on_batch(batches[-1])  # and the shape of the last, short batch
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            model.predict_on_batch(batch)
        best = max(best, len(images) / (time.perf_counter() - started))
    if model is loaded:  # float32 as saved: nothing to compare
        return best, 0.0, 0
    reference = np.concatenate([np.asarray(loaded.predict_on_batch(b)) for b in batches])[:, 1]
    served = np.concatenate([np.asarray(model.predict_on_batch(b)) for b in batches])[:, 1]
    # NaN counts as a flip: the worker refuses such output rather than record it.
    flips = int(np.sum((reference >= 0.5) != (served >= 0.5)))
    return best, float(np.abs(served - reference).max()), flips


def distinct_copies(files: list[Path], folder: Path, copies: int) -> list[Path]:
    """`copies` copies of each JPEG under new names, each with its own bytes.

    A comment segment (FF FE) right after the start-of-image marker makes every copy a
    different file to the content-addressed intake while leaving the pixels unchanged.
    """
    out = []
    for n in range(copies):
        for f in files:
            target = folder / f"{f.stem}-{n}{f.suffix}"
            target.write_bytes(_with_comment(f.read_bytes(), f"cxr-screen bench copy {n}"))
            out.append(target)
    return out


def warm_up_files(sources: list[Path], folder: Path, count: int) -> list[Path]:
    """`count` JPEGs with content no other file has (re-encodes), for a first batch of
    full size: the worker loads the model and compiles or traces the batch shape on it,
    outside the timed run."""
    out = []
    for n in range(count):
        buffer = io.BytesIO()
        Image.open(sources[n % len(sources)]).convert("L").save(buffer, "JPEG", quality=90)
        target = folder / f"warm-up-{n}.jpeg"
        target.write_bytes(_with_comment(buffer.getvalue(), f"cxr-screen warm-up {n}"))
        out.append(target)
    return out


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """`jpeg` with a comment segment (FF FE) after its start-of-image marker: other
    bytes, hence another file to the content-addressed intake, and the same pixels."""
    assert jpeg[:2] == b"\xff\xd8", "not a JPEG"
    comment = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def worker_rate(
    artifact: Path,
    checksum: str,
    files: list[Path],
    batch_size: int,
    stack: str,
    workdir: Path,
    *,
    extra_env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """Scans per second of a real worker process, and its median batch latency (s)."""
    schema = None
    if stack == "embedded":
        database = f"sqlite:///{workdir / 'cxr.db'}"
        broker = f"sqla+sqlite:///{workdir / 'broker.db'}"
    else:
        admin_url = os.environ.get(
            "CXR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with create_engine(admin_url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        database = f"{admin_url}?options=-csearch_path%3D{schema}"
        broker = os.environ.get("CXR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    env = {
        "CXR_DATABASE_URL": database,
        "CXR_BROKER_URL": broker,
        "CXR_ARCHIVE": str(workdir / "archive"),
        "CXR_QUARANTINE": str(workdir / "q"),
        "CXR_MODEL_DIR": str(workdir / "models"),
        "CXR_PSEUDONYM_KEY": "bench-pseudonym-key-0123456789abcdef",
        "CXR_BATCH_SIZE": str(batch_size),
        **(extra_env or {}),
    }
    engine = make_engine(database)
    upgrade(engine)
    factory = make_session_factory(engine)
    register_active(factory, artifact, checksum)
    inbox = workdir / "inbox"
    inbox.mkdir()
    (workdir / "warm-up").mkdir()
    copies = [Path(shutil.copy(f, inbox / f.name)) for f in files]
    warm = warm_up_files(files, workdir / "warm-up", batch_size)
    settings = Settings(**{k.removeprefix("CXR_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    app = create_app(settings, include=())

    def record(paths: list[Path]) -> list[int]:
        with session_scope(factory) as session:
            return [
                record_scan(
                    session,
                    sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                    source_path=str(p),
                    size_bytes=p.stat().st_size,
                )[0].id
                for p in paths
            ]

    def wait_done(ids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with factory() as session:
                done = session.scalar(
                    select(func.count())
                    .select_from(Scan)
                    .where(Scan.id.in_(ids), Scan.status == ScanStatus.DONE)
                )
            if done == len(ids):
                return
            time.sleep(0.05)
        raise TimeoutError(f"worker did not finish {len(ids)} scans in {timeout}s")

    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "cxr_screen.cli", "worker"],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        warm_ids = record(warm)
        send_batches(app, warm_ids, batch_size=batch_size)
        wait_done(warm_ids, 300)
        ids = record(copies)
        started = time.perf_counter()
        sent = send_batches(app, ids, batch_size=batch_size)
        with session_scope(factory) as session:
            mark_sent(session, scan_ids=sent)
        try:
            wait_done(ids, 1800)
        except TimeoutError:
            log.flush()
            tail = (workdir / "worker.log").read_text(errors="replace").splitlines()[-40:]
            print("\n".join(["worker log (last 40 lines):", *tail]), file=sys.stderr)
            raise
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()
    with factory() as session:
        stamps = sorted(
            t
            for t in session.scalars(select(Scan.finished_at).where(Scan.id.in_(ids)))
            if t is not None
        )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    batch_latency = float(np.median([g for g in gaps if g > 0.01])) if gaps else 0.0
    engine.dispose()
    if schema is not None:
        with create_engine(admin_url).begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    return len(ids) / elapsed, batch_latency


HEADER = (
    "# Screening worker throughput vs raw model.predict\n\n"
    "Model: VGG16 (ImageNet base from the shared weights file) + Flatten + Dense(2),\n"
    "224x224, preprocessing inside the model. Files: the 60 shared full-resolution\n"
    "chest X-rays (JPEG, 400-2300 px). Target: worker >= 0.85 of raw.\n\n"
    "Command: `.venv/bin/python bench/worker_throughput.py --stack embedded --batch-size 16`\n"
    "(GPU rows: the flags in their own table).\n\n"
    "Load is the 1-minute load average when the run started (other work on the\n"
    "machine slows both figures alike; the ratio is what the target is about).\n\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument(
        "--batch-size", type=int, nargs="+", default=[16], help="several: raw rates for each"
    )
    parser.add_argument("--stack", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--precision", choices=PRECISIONS, nargs="+", default=["float32"], help="several: as above"
    )
    parser.add_argument("--xla", choices=XLA_MODES, default="auto")
    parser.add_argument("--copies", type=int, default=1, help="screen each file this many times")
    parser.add_argument("--decode-threads", type=int, default=4)
    parser.add_argument("--no-worker", action="store_true", help="raw and decode rates only")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "worker.md")
    parser.add_argument("--json", type=Path, help="also append the figures here, one JSON line")
    args = parser.parse_args()
    sweep = [(p, b) for p in args.precision for b in args.batch_size]
    if len(sweep) > 1 and not args.no_worker:
        parser.error("several precisions or batch sizes measure raw rates only: add --no-worker")
    files, weights = bench_inputs(args.shared)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        workdir = Path(tmp)
        originals = files
        if args.copies > 1:
            folder = workdir / "copies"
            folder.mkdir()
            files = distinct_copies(files, folder, args.copies)
        artifact = workdir / "models" / "bench-vgg16" / "model.keras"
        checksum = build_artifact(weights, artifact)
        decode = decode_rate(files, args.decode_threads)
        print(f"decode ({args.decode_threads} threads): {decode:.1f} files/s", flush=True)
        images = decoded_images(originals) * args.copies  # the copies' pixels are the originals'
        for precision, batch_size in sweep:
            raw, max_change, flips = raw_rate(
                artifact, images, batch_size, args.repeats, precision=precision, xla=args.xla
            )
            print(
                f"raw predict_on_batch ({precision}, XLA {args.xla}, batch {batch_size}): "
                f"{raw:.2f} images/s; max |p - p_float32| {max_change:.2e}, "
                f"{flips} label(s) flipped",
                flush=True,
            )
            rate = latency = float("nan")
            if not args.no_worker:
                rate, latency = worker_rate(
                    artifact,
                    checksum,
                    files,
                    batch_size,
                    args.stack,
                    workdir,
                    extra_env={
                        "CXR_PRECISION": precision,
                        "CXR_XLA": args.xla,
                        "CXR_DECODE_THREADS": str(args.decode_threads),
                    },
                )
                print(
                    f"worker ({args.stack}): {rate:.2f} scans/s, {rate / raw:.3f} of raw; "
                    f"median gap between batches {latency:.2f}s",
                    flush=True,
                )
            record_figures(
                args,
                load_at_start,
                {
                    "stack": args.stack,
                    "batch": batch_size,
                    "precision": precision,
                    "xla": args.xla,
                    "scans": len(files),
                    "decode_threads": args.decode_threads,
                    "decode_per_s": round(decode, 1),
                    "raw_per_s": round(raw, 2),
                    "worker_per_s": round(rate, 2),
                    "worker_of_raw": round(rate / raw, 3),
                    "max_probability_change": max_change,
                    "labels_flipped": flips,
                },
            )


def record_figures(args: argparse.Namespace, load: float, figures: dict[str, Any]) -> None:
    """Append one JSON line (with `--json`) and, for the CPU defaults, a table row."""
    import keras

    stamp = {
        "when": now(),
        "commit": git_revision(),
        "machine": machine(),
        "keras": f"{keras.__version__} ({keras.backend.backend()})",
        "load": round(load, 1),
    }
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(stamp | figures) + "\n")
    if args.no_worker or (figures["precision"], figures["xla"], args.copies) != (
        "float32",
        "auto",
        1,
    ):
        return
    if not args.results.exists():
        args.results.write_text(
            HEADER + f"Machine: {machine()}.\n\n"
            "| when | commit | load | stack | batch | raw images/s | worker scans/s "
            "| worker/raw |\n|---|---|---|---|---|---|---|---|\n"
        )
    with args.results.open("a") as out:
        out.write(
            f"| {stamp['when']} | {stamp['commit']} | {load:.1f} | {figures['stack']} | "
            f"{figures['batch']} | {figures['raw_per_s']:.2f} | {figures['worker_per_s']:.2f} | "
            f"{figures['worker_of_raw']:.3f} |\n"
        )


if __name__ == "__main__":
    main()
