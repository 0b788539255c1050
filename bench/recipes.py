"""Training recipes compared on val, on its shifted copy and on the changes never trained on.

Usage (from the repository root):

    .venv/bin/python bench/recipes.py --cache DIR [--per-class 400] [--recipes today,site]
                                      [--shared DIR] [--output bench/results/recipes.md]

Every recipe is `trainer.train.train_model` (what `cxr-screen train` runs) on the same
training images: all of ``shared/data/chest_xray/train`` or, with ``--per-class N``, N
films per class taken evenly through each class folder. All are evaluated on the whole
of val and on val's shifted copy (`trainer.site_shift`: 8 site changes, 3 of which no
recipe trains on). The feature cache under ``--cache`` is shared with
`cxr-screen train` (same keys), so a warm cache makes reruns cheap.

For each model two operating points are reported: the threshold chosen on val alone
(the rule before the shifted copy existed) and the one now chosen (sensitivity >= 0.95
on val and on the shifted copy). AUC does not depend on either.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script: make the repository importable (bench.common) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now
from trainer.data import LabelledDataset, load_dataset
from trainer.metrics import evaluate_probabilities
from trainer.site_shift import HELD_OUT_SHIFTS
from trainer.train import TrainConfig, TrainResult, train_model
from worker.imaging import DecodeOptions

RECIPES: dict[str, dict[str, Any]] = {
    # The default before site changes: one stored shear/zoom/flip view, the head alone.
    "today": {"augment_views": 1, "site_views": 0, "fine_tune": False},
    # One stored view of random site changes (framing, curve, noise) + shear/zoom/flip.
    "site": {"augment_views": 0, "site_views": 1, "fine_tune": False},
    # Both views: a third of the extraction more.
    "site+aug": {"augment_views": 1, "site_views": 1, "fine_tune": False},
    # The default: "site", and the last convolutional block trained from cached block-4
    # input after the head.
    "site+fine-tune": {"augment_views": 0, "site_views": 1, "fine_tune": True},
}


def subset(dataset: LabelledDataset, per_class: int) -> LabelledDataset:
    """`per_class` training films per class, evenly spaced through each class folder."""
    if per_class <= 0:
        return dataset
    picked = []
    for label in dataset.classes:
        films = [image for image in dataset.train.images if image.label == label]
        step = max(1, len(films) // per_class)
        picked.extend(films[::step][:per_class])
    train = dataclasses.replace(dataset.train, images=tuple(picked))
    return dataclasses.replace(dataset, train=train)


def _at(result: TrainResult, threshold: float, shifted: bool, mask: Any = None) -> dict[str, Any]:
    probabilities = result.shifted_probabilities if shifted else result.probabilities
    truth = result.shifted_true_idx if shifted else result.true_idx
    assert probabilities is not None
    assert truth is not None
    if mask is not None:
        probabilities, truth = probabilities[mask], truth[mask]
    e = evaluate_probabilities(
        probabilities, truth, classes=result.classes, positive_class=result.positive_class,
        threshold=threshold,
    )  # fmt: skip
    return {"n": e.n, "auc": e.auc, "sensitivity": e.sensitivity, "specificity": e.specificity,
            "accuracy": e.accuracy}  # fmt: skip


def measure(name: str, result: TrainResult, seconds: float) -> dict[str, Any]:
    """The figures of one trained recipe at both operating points."""
    assert result.shifted is not None
    held = np.isin(np.asarray(result.shifted_names), HELD_OUT_SHIFTS)
    out: dict[str, Any] = {
        "recipe": name,
        "config": result.config.to_dict(),
        "counts": result.counts,
        "seconds": seconds,
        "temperature": result.calibration.get("temperature"),
        "ece": {
            stage: {k: v["ece"] for k, v in result.calibration[stage].items()}
            for stage in ("before", "after")
        },
        "thresholds": result.thresholds,
        "per_shift": {
            k: {"auc": v.auc, "specificity": v.specificity, "sensitivity": v.sensitivity}
            for k, v in result.shifted.per_shift.items()
        },
    }
    for point in ("evaluation", "chosen"):
        t = result.thresholds[point]
        out[point] = {
            "threshold": t,
            "val": _at(result, t, shifted=False),
            "shifted": _at(result, t, shifted=True),
            "held_out": _at(result, t, shifted=True, mask=held),
        }
    return out


def row(m: dict[str, Any], point: str) -> str:
    p = m[point]
    v, s, h = p["val"], p["shifted"], p["held_out"]
    ece = m["ece"]["after" if point == "chosen" else "before"]
    return (
        f"| {m['recipe']} | {'val + shifted' if point == 'chosen' else 'val'} | "
        f"{p['threshold']:.3f} | {v['auc']:.4f} | {v['sensitivity']:.3f} | "
        f"{v['specificity']:.3f} | {s['auc']:.4f} | {s['sensitivity']:.3f} | "
        f"{s['specificity']:.3f} | {h['sensitivity']:.3f} | {h['specificity']:.3f} | "
        f"{ece['evaluation']:.3f} / {ece['shifted']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--cache", type=Path, required=True, help="feature cache folder")
    parser.add_argument("--per-class", type=int, default=0, help="0: every training film")
    parser.add_argument("--recipes", default="today,site")
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/recipes.md")
    args = parser.parse_args()
    revision = git_revision()  # the code that trains, not the tree when the report is written
    dataset = subset(load_dataset(args.shared / "data" / "chest_xray"), args.per_class)
    weights = args.shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    results = []
    for name in args.recipes.split(","):
        config = TrainConfig(base_weights=weights, **RECIPES[name])
        t0 = time.perf_counter()
        result = train_model(dataset, config, cache_root=args.cache, decode=DecodeOptions())
        results.append(measure(name, result, time.perf_counter() - t0))
        print(json.dumps(results[-1]), flush=True)
    write(args, dataset, results, revision)


def write(
    args: argparse.Namespace,
    dataset: LabelledDataset,
    results: list[dict[str, Any]],
    revision: str,
) -> None:
    header = (
        "| recipe | threshold chosen on | threshold | val AUC | val sens | val spec | "
        "shifted AUC | shifted sens | shifted spec | held-out sens | held-out spec | "
        "ECE val / shifted |\n|" + "---|" * 12
    )
    lines = [
        "# Training recipes: val, shifted val and the changes never trained on",
        "",
        f"Recorded {now()} on revision {revision} with:",
        "",
        "```",
        f".venv/bin/python bench/recipes.py --cache CACHE --per-class {args.per_class} "
        f"--recipes {args.recipes}",
        "```",
        "",
        f"- Machine: {machine()}",
        f"- Training films: {dataset.train.counts()} "
        f"({'every film of train/' if args.per_class <= 0 else f'{args.per_class} per class'}); "
        f"val {dataset.evaluation.counts()}, its shifted copy 8 x val",
        f"- Held-out changes (never in any recipe's training views): {', '.join(HELD_OUT_SHIFTS)}",
        "- ECE: before the temperature on the val-threshold rows, after it on the others",
        "",
        header,
        *(row(m, point) for m in results for point in ("evaluation", "chosen")),
        "",
        "Specificity per site change at the chosen threshold:",
        "",
        "| recipe | " + " | ".join(results[0]["per_shift"]) + " |",
        "|---|" + "---|" * len(results[0]["per_shift"]),
        *(
            f"| {m['recipe']} | "
            + " | ".join(f"{v['specificity']:.3f}" for v in m["per_shift"].values())
            + " |"
            for m in results
        ),
        "",
        "Temperatures: " + ", ".join(f"{m['recipe']} {m['temperature']:.3f}" for m in results),
        "",
        "Training time (features already cached or not, see the cache): "
        + ", ".join(f"{m['recipe']} {m['seconds']:.0f} s" for m in results),
        "",
    ]
    args.output.write_text("\n".join(lines))
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
