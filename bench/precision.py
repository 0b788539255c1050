"""How far 16-bit inference moves a trained model's answers, and how much faster it is.

The worker bench measures speed with an untrained head, whose probabilities sit near 0
and 1: a label flip there needs a large change, so "no flip" says little. This bench
trains a real model first and scores held-out images, whose probabilities spread across
the threshold as they do in service:

1. `cxr-screen train --format json` (the installed command, default training settings)
   on a scratch copy of shared/data/chest_xray: `--per-class` training images of each
   class (a seeded sample, symlinked) and all of val/. The trainer picks the screening
   threshold on val, as in production.
2. The trained artifact is loaded as the worker loads it and val is scored in each
   precision (decoded by the worker's decoder, batches of 16, `predict_on_batch`).
3. Against float32: labels flipped at the model's threshold, the largest and the 99th
   percentile change of p(positive), AUC, sensitivity and specificity at the threshold,
   and images/s (best of 2 timed passes).

    .venv/bin/python bench/precision.py [--per-class 200] [--precision float32 mixed_bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script: make the repository importable (bench.common) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now
from bench.worker_throughput import decoded_images
from db.models import ModelVersion
from db.session import make_engine, make_session_factory
from trainer.metrics import roc_auc
from worker.accelerator import PRECISIONS, Precision, for_inference

CLASSES = ("NORMAL", "PNEUMONIA")
BATCH = 16


@dataclass(frozen=True, slots=True)
class Trained:
    """The model `cxr-screen train` registered."""

    version: str
    artifact: Path
    threshold: float
    positive: int  # index of the positive class in the model's output


def scratch_data(source: Path, target: Path, per_class: int, seed: int) -> dict[str, int]:
    """train/ with a seeded sample of `per_class` images per class, val/ whole (symlinks)."""
    rng = random.Random(seed)
    counts = {}
    for label in CLASSES:
        train = sorted((source / "train" / label).iterdir())
        chosen = sorted(rng.sample(train, min(per_class, len(train))))
        for split, paths in (
            ("train", chosen),
            ("val", sorted((source / "val" / label).iterdir())),
        ):
            folder = target / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths:
                (folder / path.name).symlink_to(path)
        counts[label] = len(chosen)
    return counts


def train_model(data: Path, workdir: Path, weights: Path) -> Trained:
    """Run the installed `cxr-screen train` on `data`; the model it registered."""
    database = f"sqlite:///{workdir / 'bench.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CXR_")},
        "CXR_DATA_DIR": str(data),
        "CXR_MODEL_DIR": str(workdir / "models"),
        "CXR_DATABASE_URL": database,
        "CXR_BASE_WEIGHTS": str(weights),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    executable = Path(sys.executable).with_name("cxr-screen")
    for args in (["db", "upgrade"], ["train", "--format", "json"]):
        done = subprocess.run(
            [str(executable), *args], cwd=workdir, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"cxr-screen {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    version = json.loads(done.stdout)["version"]
    engine = make_engine(database)
    try:
        with make_session_factory(engine)() as session:
            row = session.scalars(select(ModelVersion).where(ModelVersion.version == version)).one()
            return Trained(
                version=version,
                artifact=Path(row.artifact_path),
                threshold=row.threshold,
                positive=list(row.classes).index(row.positive_class),
            )
    finally:
        engine.dispose()


def score(model: Any, images: list[np.ndarray], positive: int) -> tuple[np.ndarray, float]:
    """p(positive) for every image, and images/s of the better of two timed passes."""
    batches = [
        np.stack(images[i : i + BATCH]).astype(np.float32) for i in range(0, len(images), BATCH)
    ]
    model.predict_on_batch(batches[0])  # warm-up: tracing, allocations
    model.predict_on_batch(batches[-1])  # and the short last batch's shape
    best = 0.0
    outputs: list[np.ndarray] = []
    for _ in range(2):
        started = time.perf_counter()
        outputs = [np.asarray(model.predict_on_batch(b)) for b in batches]
        best = max(best, len(images) / (time.perf_counter() - started))
    return np.concatenate(outputs)[:, positive].astype(np.float64), best


def figures(
    p: np.ndarray, reference: np.ndarray, truth: np.ndarray, threshold: float, rate: float
) -> dict[str, float]:
    """Agreement with float32 and the screening figures of one precision."""
    said = p >= threshold
    change = np.abs(p - reference)
    return {
        "images_per_s": rate,
        "flips": float(np.sum(said != (reference >= threshold))),
        "max_change": float(change.max()),
        "p99_change": float(np.quantile(change, 0.99)),
        "auc": roc_auc(truth, p),
        "sensitivity": float(np.mean(said[truth])),
        "specificity": float(np.mean(~said[~truth])),
        "non_finite": float(np.sum(~np.isfinite(p))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--per-class", type=int, default=200, help="training images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=["float32", "mixed_bfloat16"]
    )
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "precision.md")
    args = parser.parse_args()
    source = args.shared / "data" / "chest_xray"
    weights = args.shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    if not (source / "val").is_dir() or not weights.is_file():
        raise SystemExit(f"need data/chest_xray and the VGG16 weights under {args.shared}")
    precisions: list[Precision] = ["float32", *[p for p in args.precision if p != "float32"]]

    import keras

    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cxr-precision-") as tmp:
        workdir = Path(tmp)
        counts = scratch_data(source, workdir / "data", args.per_class, args.seed)
        started = time.perf_counter()
        trained = train_model(workdir / "data", workdir, weights)
        print(f"trained {trained.version} in {time.perf_counter() - started:.0f} s", flush=True)
        val = sorted((workdir / "data" / "val").rglob("*.jpeg"))
        truth = np.asarray([path.parent.name == CLASSES[trained.positive] for path in val])
        images = decoded_images(val)
        loaded = keras.models.load_model(trained.artifact, compile=False)
        results: dict[str, dict[str, float]] = {}
        reference = np.empty(0)
        for precision in precisions:
            p, rate = score(for_inference(loaded, precision=precision), images, trained.positive)
            if precision == "float32":
                reference = p
            results[precision] = figures(p, reference, truth, trained.threshold, rate)
            print(precision, json.dumps(results[precision]), flush=True)
        near = int(np.sum(np.abs(reference - trained.threshold) < 0.02))
    record(args, load_at_start, counts, trained, len(val), near, results)


def record(
    args: argparse.Namespace,
    load: float,
    counts: dict[str, int],
    trained: Trained,
    n_val: int,
    near: int,
    results: dict[str, dict[str, float]],
) -> None:
    """Append this run's table to the results file."""
    lines = [
        f"## {now()}, commit {git_revision()}",
        "",
        f"Machine: {machine()}. Load at start: {load:.1f}.",
        f"Command: `.venv/bin/python bench/precision.py --per-class {args.per_class} "
        f"--seed {args.seed} --precision {' '.join(args.precision)}`.",
        f"Model {trained.version}: trained on {counts} images of train/ (default "
        f"settings), threshold {trained.threshold:.4f} chosen on val. Scored: val, {n_val} "
        f"images; {near} of them have a float32 score within 0.02 of the threshold.",
        "",
        "| precision | images/s | labels flipped | max change of p | 99th pct change "
        "| AUC | sensitivity | specificity | non-finite |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for precision, f in results.items():
        lines.append(
            f"| {precision} | {f['images_per_s']:.2f} | {int(f['flips'])} | "
            f"{f['max_change']:.4f} | {f['p99_change']:.4f} | {f['auc']:.4f} | "
            f"{f['sensitivity']:.4f} | {f['specificity']:.4f} | {int(f['non_finite'])} |"
        )
    if not args.results.exists():
        args.results.write_text(
            "# Inference precision on a trained model\n\n"
            "What `CXR_PRECISION` changes: speed, and agreement with float32 on held-out\n"
            "images (bench/precision.py's docstring says how).\n"
        )
    args.results.write_text(
        args.results.read_text().rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
