"""Where the real VGG16 model's Grad-CAM heatmaps lie on real chest films.

Trains the card's model (`cxr-screen train`'s defaults: VGG16 ImageNet base, frozen) on a
class-balanced subset of ../shared/data/chest_xray/train, or takes a registered
artifact with --model, then computes the worker's heatmaps (positive class) on the val
subset, the full-resolution originals and the real chest DICOMs, and measures the share
of each map's mass inside the body box and the lung-field box of `bench.lung_fields`,
against the share of the image those boxes cover (a map spread evenly would score its
area share). Writes bench/results/heatmap_location.md and, with --pictures, the two
example pictures under docs/.

    .venv/bin/python bench/heatmap_location.py --pictures
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Run as a script: make the repository importable (bench.*) beside the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_SHARED, REPO, git_revision, machine, now
from bench.lung_fields import estimate, mass_share
from worker.imaging import DecodeOptions
from worker.pipeline import (
    ModelInput,
    OperatingPoint,
    Prepared,
    interpret,
    load_verified,
    prepare_file,
)
from worker.pipeline.explain import Explainer
from worker.pipeline.heatmap_picture import caption, png_bytes, render
from worker.pipeline.predict import Predictor

RESULTS = REPO / "bench" / "results" / "heatmap_location.md"
PICTURES = {
    "cr_chest_pa_mono1_j2k_lossless.dcm": REPO / "docs" / "heatmap-cr-chest-pa.png",
    "cr_chest_sc_jpeg_baseline.dcm": REPO / "docs" / "heatmap-cr-chest-sc.png",
}


@dataclass(frozen=True, slots=True)
class Measured:
    """One image's heatmap against its estimated regions."""

    group: str
    name: str
    label: str
    probability: float
    body_share: float
    body_area: float
    lung_share: float
    lung_area: float
    hot_lung_share: float  # of the map's mass above half its peak
    peak_in_lungs: bool  # the pointing game: the hottest pixel lies in the lung box
    peak_in_body: bool
    occlusion_corr: float | None  # Pearson r with the occlusion-sensitivity map (flagged)


def _subset(source: Path, target: Path, split: str, per_class: int) -> None:
    for label in ("NORMAL", "PNEUMONIA"):
        files = sorted((source / split / label).iterdir())
        step = max(1, len(files) // per_class)
        for path in files[::step][:per_class]:
            destination = target / split / label / path.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


def _train(
    shared: Path, weights: Path, per_class: int, pooling: str, workdir: Path
) -> tuple[Path, float]:
    from trainer.data import load_dataset
    from trainer.model import HeadConfig
    from trainer.train import TrainConfig, train_model

    data = workdir / "data"
    _subset(shared / "chest_xray", data, "train", per_class)
    _subset(shared / "chest_xray", data, "val", max(10, per_class // 4))
    result = train_model(
        load_dataset(data),
        TrainConfig(base_weights=weights, head=HeadConfig(pooling=pooling)),
        cache_root=workdir / "cache",
        decode=DecodeOptions(),
    )
    artifact = workdir / "model.keras"
    result.model.save(artifact)
    print(f"trained on {result.counts}: val {result.evaluation.to_dict()}")
    return artifact, result.threshold


def _images(shared: Path, val_per_class: int) -> list[tuple[str, Path]]:
    val = shared / "chest_xray" / "val"
    images = [
        ("val", path)
        for label in ("NORMAL", "PNEUMONIA")
        for path in sorted((val / label).iterdir())[::7][:val_per_class]
    ]
    images += [("full resolution", p) for p in sorted((shared / "chest_xray_fullres").rglob("*"))
               if p.is_file()][::3]  # fmt: skip
    images += [("DICOM", shared / "dicom" / name) for name in
               ("cr_chest_pa_mono1_j2k_lossless.dcm", "dx_chest_pa_mono1_inverse_plut_j2k.dcm",
                "cr_chest_sc_jpeg_baseline.dcm")]  # fmt: skip
    return images


def occlusion_map(predictor: Predictor, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """How much covering each place (32 px grey squares, stride 16) lowers the positive
    probability: a model-agnostic map of what the decision rests on."""
    size = image.shape[0]
    base = float(predictor(image[None]).values[0][1])
    corners = [(y, x) for y in range(0, size - 31, 16) for x in range(0, size - 31, 16)]
    covered = []
    for y, x in corners:
        copy = image.copy()
        copy[y : y + 32, x : x + 32] = 128
        covered.append(copy)
    answers = predictor(np.stack(covered)).values[:, 1]
    total = np.zeros(image.shape[:2], np.float32)
    count = np.zeros(image.shape[:2], np.float32)
    for (y, x), answer in zip(corners, answers, strict=True):
        total[y : y + 32, x : x + 32] += max(base - float(answer), 0.0)
        count[y : y + 32, x : x + 32] += 1
    return total / np.maximum(count, 1)


def measure(
    artifact: Path,
    threshold: float,
    images: list[tuple[str, Path]],
    pictures: bool,
    occlusion: bool = False,
) -> list[Measured]:
    """The heatmap of each image, measured against its regions."""
    import hashlib

    model = load_verified(
        artifact, checksum=hashlib.sha256(artifact.read_bytes()).hexdigest(), name="bench"
    )
    predictor = Predictor(model, name="bench")
    point = OperatingPoint(("NORMAL", "PNEUMONIA"), "PNEUMONIA", threshold)
    explainer = Explainer.of(model)
    model_input = ModelInput.of(int(model.input_shape[1]), DecodeOptions(pseudonym_key=b"b" * 32))
    measured: list[Measured] = []
    for group, path in images:
        prepared = prepare_file(path, model_input)
        if not isinstance(prepared, Prepared):
            print(f"skipped {path.name}: {prepared.message}")
            continue
        (verdict,) = interpret(predictor(prepared.image[None]), point, predictor)
        (cam,) = explainer.heatmaps(prepared.image[None], 1)
        regions = estimate(prepared.image)
        corr = None
        if occlusion and verdict.label == "PNEUMONIA":
            occluded = occlusion_map(predictor, prepared.image)
            corr = float(np.corrcoef(cam.ravel(), occluded.ravel())[0, 1])
        measured.append(
            Measured(
                group,
                path.name,
                verdict.label,
                verdict.probability,
                mass_share(cam, regions.body),
                regions.area_share(regions.body),
                mass_share(cam, regions.lungs),
                regions.area_share(regions.lungs),
                mass_share(np.where(cam >= 0.5, cam, 0.0).astype(np.float32), regions.lungs),
                _inside(np.unravel_index(int(np.argmax(cam)), cam.shape), regions.lungs),
                _inside(np.unravel_index(int(np.argmax(cam)), cam.shape), regions.body),
                corr,
            )
        )
        if pictures and path.name in PICTURES:
            words = caption(
                label=verdict.label,
                probability=verdict.probability,
                threshold=threshold,
                model_version="bench (VGG16, Kermany subset)",
            )
            PICTURES[path.name].write_bytes(png_bytes(render(prepared.image, cam, words)))
    return measured


def _inside(point: tuple[Any, ...], box: tuple[int, int, int, int]) -> bool:
    row, col = int(point[0]), int(point[1])
    return box[0] <= row < box[2] and box[1] <= col < box[3]


def _row(name: str, rows: list[Measured]) -> str:
    def mean(values: list[float]) -> str:
        return f"{statistics.fmean(values):.3f}"

    inside = sum(r.lung_share > r.lung_area for r in rows)
    return (
        f"| {name} | {len(rows)} | {mean([r.body_share for r in rows])} | "
        f"{mean([r.body_area for r in rows])} | {mean([r.lung_share for r in rows])} | "
        f"{mean([r.lung_area for r in rows])} | {inside}/{len(rows)} | "
        f"{mean([r.hot_lung_share for r in rows])} | "
        f"{sum(r.peak_in_lungs for r in rows)}/{len(rows)} | "
        f"{sum(r.peak_in_body for r in rows)}/{len(rows)} |"
    )


def _occlusion_lines(rows: list[Measured]) -> list[str]:
    values = sorted(r.occlusion_corr for r in rows if r.occlusion_corr is not None)
    if not values:
        return []
    return [
        f"Grad-CAM against occlusion sensitivity (32 px grey squares, stride 16) on the "
        f"{len(values)} flagged films: Pearson r median {statistics.median(values):.2f}, "
        f"range {values[0]:.2f} to {values[-1]:.2f}; {sum(v > 0.3 for v in values)} of "
        f"{len(values)} above 0.3.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--model", type=Path, help="a model.keras to measure instead of training")
    parser.add_argument("--threshold", type=float, default=0.5, help="with --model")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--pictures", action="store_true", help="write the docs/ examples")
    parser.add_argument(
        "--pooling", default="flatten", help="the head's pooling: flatten (default) or avg"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table goes")
    parser.add_argument(
        "--occlusion",
        action="store_true",
        help="also compare each flagged film's heatmap with its occlusion-sensitivity map",
    )
    args = parser.parse_args()
    weights = args.shared / "weights" / "vgg16_imagenet_notop.weights.h5"
    shared = args.shared / "data"
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            artifact, threshold = _train(
                shared, weights, args.train_per_class, args.pooling, Path(scratch)
            )
            source = (
                f"trained here on {args.train_per_class} images per class of chest_xray/train "
                f"(`cxr-screen train` defaults, head pooling {args.pooling})"
            )
        else:
            artifact, threshold, source = args.model, args.threshold, str(args.model)
        rows = measure(
            artifact, threshold, _images(shared, args.val_per_class), args.pictures, args.occlusion
        )
    groups = sorted({r.group for r in rows})
    lines = [
        "# Where the heatmaps lie",
        "",
        f"Recorded {now()} on revision {git_revision()} with:",
        "",
        "```",
        " ".join([".venv/bin/python", "bench/heatmap_location.py", *sys.argv[1:]]),
        "```",
        "",
        f"- Machine: {machine()}",
        f"- Model: VGG16 (ImageNet base, frozen), {source}; threshold {threshold:.3f}",
        "- Heatmaps: the worker's Grad-CAM of the PNEUMONIA class at block5_conv3, on the "
        "224 px model input; regions: `bench/lung_fields.py` (Otsu; dark regions not "
        "connected to the border are the lung fields).",
        "- Share = the map's mass inside the box; area = the share of the image the box "
        "covers (an evenly spread map scores its area); lung share > area: images whose "
        "lung-box share exceeds the box's area; hot mass: the same share counting only map "
        "values of at least half the peak; peak: the pointing game (the hottest pixel).",
        "",
        "| images | n | mass in body box | body box area | mass in lung box | lung box area "
        "| lung share > area | hot mass (>= half peak) in lung box | peak in lung box "
        "| peak in body box |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row(g, [r for r in rows if r.group == g]) for g in groups),
        _row("flagged (PNEUMONIA)", [r for r in rows if r.label == "PNEUMONIA"]),
        _row("all", rows),
        "",
        *_occlusion_lines(rows),
        "Per DICOM file (lung share / area): "
        + "; ".join(
            f"{r.name} {r.label} {r.probability:.2f}: {r.lung_share:.2f} / {r.lung_area:.2f}"
            for r in rows
            if r.group == "DICOM"
        ),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
