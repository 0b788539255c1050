"""Training wall time and validation figures of `cxr-screen train` on the real data.

Usage (from the repository root):

    .venv/bin/python bench/train.py [--shared DIR] [--workdir DIR] [--new-images 10]
                                    [--output bench/results/train.md]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--new-images", type=int, default=10)
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/train.md")
    args = parser.parse_args()
    source = args.shared / "data" / "chest_xray"
    weights = args.shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    for needed in (source, weights):
        if not needed.exists():
            raise SystemExit(f"{needed} is absent: the real data lives in ../shared")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cxr-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    _link_tree(source, data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(
        CXR_DATABASE_URL=f"sqlite:///{work / 'cxr.db'}",
        CXR_MODEL_DIR=str(work / "models"),
        CXR_DATA_DIR=str(data),
        CXR_BASE_WEIGHTS=str(weights),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    started = now()
    load = os.getloadavg()
    _cli(["db", "upgrade"], env=env, cwd=work, log=work / "db.log")
    first_s, out = _cli(["train", "--format", "json"], env=env, cwd=work, log=work / "first.log")
    first = json.loads(out)
    added = _add_new_images(data, args.new_images)
    rerun_s, out = _cli(["train", "--format", "json"], env=env, cwd=work, log=work / "rerun.log")
    rerun = json.loads(out)
    same_s, out = _cli(["train", "--format", "json"], env=env, cwd=work, log=work / "same.log")
    same = json.loads(out)
    outcomes: dict[str, Any] = {
        "first": {"wall_s": first_s, **first},
        "rerun": {"wall_s": rerun_s, "added": added, **rerun},
        "unchanged": {"wall_s": same_s, **same},
        "workdir": str(work),
    }
    args.output.with_suffix(".json").write_text(json.dumps(outcomes, indent=2) + "\n")
    ev = first["evaluation"]
    lines = [
        "# Training benchmark",
        "",
        f"Recorded {started} on revision {git_revision()} with:",
        "",
        "```",
        ".venv/bin/python bench/train.py",
        "```",
        "",
        f"- Machine: {machine()}; no GPU",
        f"- Load average when the run started (other work on the machine): "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- Data: shared/data/chest_xray, train {first['counts']['train']}, evaluated on val "
        f"{first['counts']['evaluation']}; base weights "
        "shared/weights/vgg16_imagenet_notop.weights.h5",
        "- Each step is the installed command in a fresh process (TensorFlow import "
        "included): `cxr-screen train --format json` with CXR_DATA_DIR, CXR_MODEL_DIR, "
        "CXR_DATABASE_URL (SQLite) and CXR_BASE_WEIGHTS pointing at a scratch folder.",
        "",
        "## Validation figures of the first model (val, "
        f"{ev['n']} images: {ev['confusion_matrix'][0][0] + ev['confusion_matrix'][0][1]} NORMAL, "
        f"{ev['confusion_matrix'][1][0] + ev['confusion_matrix'][1][1]} PNEUMONIA)",
        "",
        "| model | threshold | accuracy | AUC | sensitivity | specificity | accuracy @0.5 "
        "| sensitivity @0.5 | specificity @0.5 |",
        "|---|---|---|---|---|---|---|---|---|",
        _row(f"{first['version']} (first run)", first["evaluation"]),
        _row(f"{rerun['version']} (+{len(added)} images)", rerun["evaluation"]),
        "",
        f"Confusion matrix at the threshold (rows true, columns predicted; "
        f"{', '.join(ev['classes'])}): {ev['confusion_matrix']}. "
        f"Promoted: first {first['promoted']}, rerun {rerun['promoted']} "
        f"({'; '.join(rerun['gate']['reasons'])}).",
        "",
        "## Wall time",
        "",
        "| run | wall s | features extracted | from cache | phases (s) |",
        "|---|---|---|---|---|",
    ]
    for name, outcome in (("first run (cold cache)", outcomes["first"]),
                          (f"rerun, {len(added)} new images", outcomes["rerun"])):  # fmt: skip
        phases = ", ".join(f"{k} {v:.1f}" for k, v in outcome["timings_s"].items())
        lines.append(
            f"| {name} | {outcome['wall_s']:.1f} | {outcome['features']['extracted']} | "
            f"{outcome['features']['cached']} | {phases} |"
        )
    lines.append(
        f"| unchanged data ({same['status']}) | {same_s:.1f} | 0 | - | hashing and the "
        "fingerprint check only |"
    )
    lines.append("")
    args.output.write_text("\n".join(lines) + "\n")
    print(args.output.read_text())
    print(f"raw outcomes: {args.output.with_suffix('.json')}; scratch folder: {work}")


if __name__ == "__main__":
    main()
