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
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

# Run as a script: make the repository importable (bench.common) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now
from db.migrate import upgrade
from db.models import ModelStatus, ModelVersion, Scan, ScanStatus
from db.scans import mark_sent, record_scan
from db.session import make_engine, make_session_factory, session_scope
from worker.celery_app import create_app
from worker.dispatch import send_batches
from worker.imaging import DecodeOptions
from worker.screening import Prepared, draft_for, prepare_file
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


def raw_rate(artifact: Path, files: list[Path], batch_size: int, repeats: int) -> float:
    """Images per second of `predict_on_batch` alone on pre-decoded inputs."""
    import keras

    model = keras.models.load_model(artifact, compile=False)
    options = draft_for(DecodeOptions(), SIZE)
    images = []
    for f in files:
        prepared = prepare_file(f, SIZE, options)
        assert isinstance(prepared, Prepared), prepared
        images.append(prepared.image)
    batches = [
        np.stack(images[i : i + batch_size]).astype(np.float32)
        for i in range(0, len(images), batch_size)
    ]
    model.predict_on_batch(batches[0])  # warm-up: graph tracing, allocations
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            model.predict_on_batch(batch)
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


def warm_up_file(source: Path, folder: Path) -> Path:
    """A JPEG with content no other file has (a re-encode), to load the model."""
    out = folder / "warm-up.jpeg"
    buffer = io.BytesIO()
    Image.open(source).convert("L").save(buffer, "JPEG", quality=90)
    out.write_bytes(buffer.getvalue())
    return out


def worker_rate(
    artifact: Path, checksum: str, files: list[Path], batch_size: int, stack: str, workdir: Path
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
        "CXR_PSEUDONYM_KEY": "bench",
        "CXR_BATCH_SIZE": str(batch_size),
    }
    engine = make_engine(database)
    upgrade(engine)
    factory = make_session_factory(engine)
    register_active(factory, artifact, checksum)
    inbox = workdir / "inbox"
    inbox.mkdir()
    copies = [Path(shutil.copy(f, inbox / f.name)) for f in files]
    warm = warm_up_file(files[0], inbox)
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
        [sys.executable, "-m", "worker.cli", "worker"],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        warm_ids = record([warm])
        send_batches(app, warm_ids, batch_size=batch_size)
        wait_done(warm_ids, 300)
        ids = record(copies)
        started = time.perf_counter()
        sent = send_batches(app, ids, batch_size=batch_size)
        with session_scope(factory) as session:
            mark_sent(session, scan_ids=sent)
        wait_done(ids, 900)
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()
    with factory() as session:
        stamps = sorted(session.scalars(select(Scan.finished_at).where(Scan.id.in_(ids))))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    batch_latency = float(np.median([g for g in gaps if g > 0.01])) if gaps else 0.0
    engine.dispose()
    if schema is not None:
        with create_engine(admin_url).begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    return len(ids) / elapsed, batch_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stack", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "worker.md")
    args = parser.parse_args()
    files = sorted((args.shared / "data" / "chest_xray_fullres").rglob("*.jpeg"))
    weights = args.shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    if len(files) != 60 or not weights.is_file():
        raise SystemExit(
            f"need the 60 full-resolution JPEGs and the VGG16 weights under {args.shared}"
        )
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        workdir = Path(tmp)
        artifact = workdir / "models" / "bench-vgg16" / "model.keras"
        checksum = build_artifact(weights, artifact)
        raw = raw_rate(artifact, files, args.batch_size, args.repeats)
        print(f"raw predict_on_batch: {raw:.2f} images/s", flush=True)
        rate, latency = worker_rate(artifact, checksum, files, args.batch_size, args.stack, workdir)
    ratio = rate / raw
    print(
        f"worker ({args.stack}): {rate:.2f} scans/s, {ratio:.3f} of raw; "
        f"median gap between batches {latency:.2f}s",
        flush=True,
    )
    command = (
        f".venv/bin/python bench/worker_throughput.py --stack {args.stack} "
        f"--batch-size {args.batch_size}"
    )
    row = (
        f"| {now()} | {git_revision()} | {load_at_start:.1f} | {args.stack} | "
        f"{args.batch_size} | {raw:.2f} | {rate:.2f} | {ratio:.3f} |\n"
    )
    if not args.results.exists():
        args.results.write_text(
            "# Screening worker throughput vs raw model.predict\n\n"
            f"Machine: {machine()}.\n"
            "Model: VGG16 (ImageNet base from the shared weights file) + Flatten + Dense(2),\n"
            "224x224, preprocessing inside the model. Files: the 60 shared full-resolution\n"
            "chest X-rays (JPEG, 400-2300 px). Target: worker >= 0.85 of raw.\n\n"
            f"Command: `{command}`\n\n"
            "Load is the 1-minute load average when the run started (other work on the\n"
            "machine slows both figures alike; the ratio is what the target is about).\n\n"
            "| when | commit | load | stack | batch | raw images/s | worker scans/s "
            "| worker/raw |\n|---|---|---|---|---|---|---|---|\n"
        )
    with args.results.open("a") as out:
        out.write(row)


if __name__ == "__main__":
    main()
