"""Training wall time and validation figures of `cxr-screen train` on the real data.

Usage (from the repository root):

    .venv/bin/python bench/train.py [--shared DIR] [--workdir DIR] [--new-images 10]
                                    [--cache DIR] [--output bench/results/train.md]

Runs the installed `cxr-screen` exactly as an operator would, on a scratch copy of
``shared/data/chest_xray`` (train/ and val/ as symlinks, never inside the repository)
with the ImageNet VGG16 base from ``shared/weights``, a fresh SQLite database and an
empty model directory (so the feature cache starts cold):

1. ``cxr-screen db upgrade``
2. ``cxr-screen train --format json``: the first run (every image through VGG16).
3. Ten new training images are added (re-cropped, re-encoded copies of existing training
   images, so no validation patient leaks in), then ``cxr-screen train`` again: only
   they go through the base.
4. ``cxr-screen train`` once more with nothing changed: the nightly no-op.

With ``--cache DIR`` the scratch model directory's feature cache is that folder (a
cache `cxr-screen train` or bench/recipes.py filled before): the first run then shows
what a night costs when the features are there, not a cold start.

A cold first run takes over an hour on 2 CPU cores; ``--phase first`` stops after it
(its outcome is kept in the work folder) and ``--phase rest`` goes on from that folder
with the rerun and the unchanged night, so the two halves can run apart.

Writes the figures and timings to the Markdown file and the raw outcomes beside it
(``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

# Run as a script: make the repository importable (bench.common) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now

CLASSES = ("NORMAL", "PNEUMONIA")

THRESHOLD_NOTE = (
    "the highest threshold whose sensitivity is at least 0.95 on val and on val's "
    "shifted copy (trainer.metrics.SHIFTED_THRESHOLD_RULE), midway to the next lower "
    "score; the temperature fitted on val is in the head."
)

# How the default head was chosen: a one-off experiment, not re-run by this script.
HEAD_SELECTION = [
    "## How the default head was chosen (one-off experiment, not re-run here)",
    "",
    "The sealed acceptance split differs from train/val, so val alone cannot rank heads:",
    "they all reach val AUC 0.99+. As a stand-in for another site's films, the val images",
    "were also perturbed (gamma 0.7 and 1.5, blur with lower contrast, and a 15 % zoom-in:",
    "centre crop of 85 % resized back to 224 px) and every head was trained on the same",
    "cached VGG16 features of train (one seed unless stated). The threshold is chosen on",
    "clean val (sensitivity >= 0.95) and applied unchanged to the perturbed copies.",
    "",
    "| head (5 epochs, class weights unless stated) | val AUC | zoomed val AUC | "
    "zoomed val sens / spec at the val threshold | spec at 0.5 |",
    "|---|---|---|---|---|",
    "| seed: Flatten + Dense on raw features, no regularisation, no class weights "
    "| 0.988 | 0.858 | 0.997 / 0.716 | 0.612 |",
    "| Flatten, unit-RMS features, dropout 0.5, L2 1e-3 (3 seeds) | 0.998-0.999 "
    "| 0.968-0.994 | threshold saturates at 1.0 for 2 of 3 seeds | 0.36-0.93 |",
    "| GAP + Dense, label smoothing 0.1 (2 seeds) | 0.997 | 0.992 | 0.98 / 0.87-0.90 | 0.81-0.83 |",
    "| Flatten, unit-norm features, dropout 0.5, L2 1e-4 (2 seeds) | 0.996 | 0.995 "
    "| 1.00 / 0.74 | 0.65-0.66 |",
    "| the same + one stored augmented view (2 seeds) | 0.996 | 0.996 | 0.99 / 0.91 | 0.83-0.88 |",
    "| **default**: unit-norm Flatten, dropout 0.5, L2 1e-5, one augmented view "
    "| 0.997 | 0.996 | 0.98 / 0.955 | 0.84 |",
    "",
    "Photometric changes (gamma, blur) barely move any head; the zoom is what breaks the",
    "seed's head (AUC 0.86, close to the 0.8 the issue reports for it on the acceptance",
    "split). Scaling the pooled features to unit norm keeps the softmax from saturating",
    "(the seed head's probabilities are exactly 1.0 for most images, so no threshold can",
    "be placed) and makes the result independent of the seed; the stored augmented view",
    "(shear, zoom, flip) is what keeps specificity at the val threshold on zoomed images.",
    "",
]


def _link_tree(source: Path, target: Path) -> None:
    for split in ("train", "val"):
        for label in CLASSES:
            folder = target / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted((source / split / label).iterdir()):
                (folder / path.name).symlink_to(path)


def _add_new_images(data: Path, count: int) -> list[str]:
    """`count` new training images: 92 % centre crops of existing ones, re-encoded."""
    added = []
    for i in range(count):
        label = CLASSES[i % 2]
        folder = data / "train" / label
        source = sorted(p for p in folder.iterdir() if p.is_symlink())[i * 7]
        image = Image.open(source).convert("L")
        width, height = image.size
        dx, dy = int(width * 0.04), int(height * 0.04)
        crop = image.crop((dx, dy, width - dx, height - dy)).resize((width, height))
        target = folder / f"bench_new_{i:02d}.jpeg"
        crop.save(target, quality=93)
        added.append(str(target.relative_to(data)))
    return added


def _cli(args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> tuple[float, str]:
    executable = Path(sys.executable).with_name("cxr-screen")
    start = time.perf_counter()
    done = subprocess.run(
        [str(executable), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    log.write_text(f"$ cxr-screen {' '.join(args)}\n{done.stdout}\n--- stderr ---\n{done.stderr}")
    if done.returncode != 0:
        raise SystemExit(f"cxr-screen {' '.join(args)} failed ({done.returncode}); see {log}")
    return elapsed, done.stdout


def _row(name: str, figures: dict[str, Any]) -> str:
    half = figures["at_threshold_0.5"]
    return (
        f"| {name} | {figures['threshold']:.4f} | {figures['accuracy']:.4f} | "
        f"{figures['auc']:.4f} | {figures['sensitivity']:.4f} | {figures['specificity']:.4f} | "
        f"{half['accuracy']:.4f} | {half['sensitivity']:.4f} | {half['specificity']:.4f} |"
    )


def _shifted_row(name: str, outcome: dict[str, Any]) -> str:
    shifted = outcome.get("shifted") or {}
    held = shifted.get("held_out") or {}
    calibration = outcome.get("calibration") or {}
    before, after = calibration.get("ece_before") or {}, calibration.get("ece_after") or {}

    def f(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    return (
        f"| {name} | {f(outcome['thresholds'].get('evaluation'))} | "
        f"{f(outcome['thresholds'].get('shifted'))} | {f(shifted.get('auc'))} | "
        f"{f(shifted.get('sensitivity'))} | {f(shifted.get('specificity'))} | "
        f"{f(held.get('sensitivity'))} | {f(held.get('specificity'))} | "
        f"{f(calibration.get('temperature'))} | {f(before.get('evaluation'))} -> "
        f"{f(after.get('evaluation'))} | {f(before.get('shifted'))} -> "
        f"{f(after.get('shifted'))} |"
    )


def render(outcomes: dict[str, Any]) -> str:
    """The Markdown report of one benchmark's outcomes."""
    meta, first, rerun, same = (
        outcomes["meta"], outcomes["first"], outcomes["rerun"], outcomes["unchanged"]
    )  # fmt: skip
    ev = first["evaluation"]
    added = rerun["added"]
    negatives = sum(ev["confusion_matrix"][0])
    positives = sum(ev["confusion_matrix"][1])
    lines = [
        "# Training benchmark",
        "",
        f"Recorded {meta['started']} on revision {meta['revision']} with:",
        "",
        "```",
        *meta.get("commands", [".venv/bin/python bench/train.py"]),
        "```",
        "",
        f"- Machine: {meta['machine']}; no GPU",
        f"- Load average when the run started (other work on the machine): {meta['load']}",
        f"- Data: shared/data/chest_xray, train {first['counts']['train']}, evaluated on val "
        f"{first['counts']['evaluation']}; base weights "
        "shared/weights/vgg16_imagenet_notop.weights.h5",
        "- Each step is the installed command in a fresh process (TensorFlow import "
        "included): `cxr-screen train --format json` with CXR_DATA_DIR, CXR_MODEL_DIR, "
        "CXR_DATABASE_URL (SQLite) and CXR_BASE_WEIGHTS pointing at a scratch folder; "
        "default training settings (VGG16, 5 epochs, batch 32).",
        "",
        f"## Validation figures (val: {negatives} NORMAL, {positives} PNEUMONIA)",
        "",
        "| model | threshold | accuracy | AUC | sensitivity | specificity | accuracy @0.5 "
        "| sensitivity @0.5 | specificity @0.5 |",
        "|---|---|---|---|---|---|---|---|---|",
        _row(f"{first['version']} (first run)", first["evaluation"]),
        _row(f"{rerun['version']} (+{len(added)} images)", rerun["evaluation"]),
        "",
        "On val's shifted copy (8 site changes of every val film; held out: the 3 changes "
        "no training view applies), at the same threshold, and the calibration:",
        "",
        "| model | threshold from val | from shifted | shifted AUC | shifted sens | "
        "shifted spec | held-out sens | held-out spec | temperature | ECE val | "
        "ECE shifted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        _shifted_row(first["version"], first),
        _shifted_row(rerun["version"], rerun),
        "",
        f"Threshold: {THRESHOLD_NOTE} First model's confusion matrix at its threshold "
        f"(rows true, columns predicted; {', '.join(ev['classes'])}): "
        f"{ev['confusion_matrix']}. Promoted: first {first['promoted']}, rerun "
        f"{rerun['promoted']} ({'; '.join(rerun['gate']['reasons'])}).",
        "",
        "## Wall time",
        "",
        "| run | wall s | features extracted | from cache | shifted copy extracted / cached "
        "| phases (s) |",
        "|---|---|---|---|---|---|",
    ]
    first_name = "first run (warm cache)" if meta.get("cache") else "first run (cold cache)"
    for name, outcome in ((first_name, first),
                          (f"rerun, {len(added)} new images", rerun)):  # fmt: skip
        phases = ", ".join(f"{k} {v:.1f}" for k, v in outcome["timings_s"].items())
        features = outcome["features"]
        lines.append(
            f"| {name} | {outcome['wall_s']:.1f} | {features['extracted']} | "
            f"{features['cached']} | {features.get('shifted_extracted', 0)} / "
            f"{features.get('shifted_cached', 0)} | {phases} |"
        )
    lines.append(
        f"| unchanged data ({same['status']}) | {same['wall_s']:.1f} | 0 | - | - | hashing "
        "and the fingerprint check only |"
    )
    lines += [
        "",
        "Features extracted count images through VGG16: each training image once per "
        "stored view (the original and the recipe's stored views), each val image once, "
        "and val's shifted copy 8 times (counted apart)."
        + (
            f" The first run averaged "
            f"{first['timings_s']['features_s'] / first['features']['extracted']:.2f} s per "
            "image on the shared 2-core machine."
            if first["features"]["extracted"]
            else f" The first run found every feature in the cache ({meta.get('cache')})."
        )
        + " The rerun trains again on all cached features (the head, then block 5 when "
        "the recipe fine-tunes: train_s), re-evaluates the active model on val and its "
        "shifted copy for the gate, and saves the new version.",
        "",
        "Counts are below shared/data/README.md's because byte-identical files are used "
        "once: train/ holds 22 exact duplicates (1 NORMAL, 21 PNEUMONIA), val/PNEUMONIA 4; "
        "no file is in both train/ and val/. Each is listed in the run's log.",
        "",
        *HEAD_SELECTION,
    ]
    return "\n".join(lines) + "\n"


def _environment(work: Path, data: Path, weights: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_DATABASE_URL=f"sqlite:///{work / 'cxr.db'}",
        CXR_MODEL_DIR=str(work / "models"),
        CXR_DATA_DIR=str(data),
        CXR_BASE_WEIGHTS=str(weights),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--new-images", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=None, help="A feature cache to start from.")
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/train.md")
    parser.add_argument(
        "--render", type=Path, default=None, help="Only rewrite the report from this JSON."
    )
    parser.add_argument(
        "--phase",
        choices=("all", "first", "rest"),
        default="all",
        help="first: stop after the first run (needs --workdir); rest: go on from it.",
    )
    args = parser.parse_args()
    if args.render is not None:
        args.output.write_text(render(json.loads(args.render.read_text())))
        return
    source = args.shared / "data" / "chest_xray"
    weights = args.shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    for needed in (source, weights):
        if not needed.exists():
            raise SystemExit(f"{needed} is absent: the real data lives in ../shared")
    if args.phase != "all" and args.workdir is None:
        raise SystemExit("--phase first|rest needs --workdir: the folder the halves share")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cxr-train-bench-"))
    data = work / "data"
    env = _environment(work, data, weights)
    kept = work / "first.json"
    if args.phase == "rest":
        state = json.loads(kept.read_text())
        meta, first = state["meta"], state["first"]
        meta.setdefault("commands", []).append(
            " ".join([".venv/bin/python bench/train.py", *sys.argv[1:]])
        )
    else:
        work.mkdir(parents=True, exist_ok=True)
        _link_tree(source, data)
        if args.cache is not None:
            (work / "models").mkdir(parents=True, exist_ok=True)
            (work / "models" / "feature_cache").symlink_to(args.cache.resolve())
        load = os.getloadavg()
        meta = {
            "started": now(),
            "revision": git_revision(),
            "machine": machine(),
            "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            "cache": str(args.cache) if args.cache is not None else None,
            "commands": [" ".join([".venv/bin/python bench/train.py", *sys.argv[1:]])],
        }
        _cli(["db", "upgrade"], env=env, cwd=work, log=work / "db.log")
        first_s, out = _cli(
            ["train", "--format", "json"], env=env, cwd=work, log=work / "first.log"
        )
        first = {"wall_s": first_s, **json.loads(out)}
        kept.write_text(json.dumps({"meta": meta, "first": first}, indent=2) + "\n")
        if args.phase == "first":
            print(f"first run: {first_s:.0f} s; go on with --phase rest --workdir {work}")
            return
    added = _add_new_images(data, args.new_images)
    rerun_s, out = _cli(["train", "--format", "json"], env=env, cwd=work, log=work / "rerun.log")
    rerun = json.loads(out)
    same_s, out = _cli(["train", "--format", "json"], env=env, cwd=work, log=work / "same.log")
    same = json.loads(out)
    outcomes: dict[str, Any] = {
        "meta": meta,
        "first": first,
        "rerun": {"wall_s": rerun_s, "added": added, **rerun},
        "unchanged": {"wall_s": same_s, **same},
        "workdir": str(work),
    }
    args.output.with_suffix(".json").write_text(json.dumps(outcomes, indent=2) + "\n")
    args.output.write_text(render(outcomes))
    print(args.output.read_text())
    print(f"raw outcomes: {args.output.with_suffix('.json')}; scratch folder: {work}")


if __name__ == "__main__":
    main()
