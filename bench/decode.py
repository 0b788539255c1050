"""Decoding throughput and peak memory: real DICOMs and full-resolution JPEGs, one core.

Usage (from the repository root):

    .venv/bin/python bench/decode.py [SHARED_DATA] [--rounds N] [--output FILE]

SHARED_DATA defaults to ../shared/data beside the checkout. Each configuration runs in
its own child process pinned to one CPU, so its peak RSS (ru_maxrss) is its own and the
files-per-second figure is per core. Timing covers what the worker does per file:
`decode_path` then `to_model_input`. Results go to bench/results/decode.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

# One thread for every numeric library, before numpy is imported: the figure is per core.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import pydicom  # noqa: E402

from worker.imaging import DecodeOptions, decode_path, to_model_input  # noqa: E402

DICOM_FILES = (
    "cr_chest_pa_mono1_j2k_lossless.dcm",
    "dx_chest_pa_mono1_inverse_plut_j2k.dcm",
    "cr_chest_sc_jpeg_baseline.dcm",
    "dx_thorax_lateral_animal.dcm",
    "cr_hip_jpeg_lossless.dcm",  # out of scope, so HIP is allowed below to time its decode
)
# name: (file set, draft_size)
CONFIGS: dict[str, tuple[str, int | None]] = {
    "dicom": ("dicom", None),
    "jpeg_draft_448_default": ("jpeg", 448),
    "jpeg_draft_224": ("jpeg", 224),
    "jpeg_full_decode": ("jpeg", None),
}


def main() -> None:
    """Run every configuration in a child process and write the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared_data", nargs="?", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over each file set")
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/decode.md")
    parser.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        json.dump(run_config(args.child, args.shared_data, args.rounds), sys.stdout)
        return
    if not (args.shared_data / "dicom").is_dir():
        sys.exit(f"{args.shared_data}/dicom not found: pass the shared data folder")
    load = os.getloadavg()
    results = {}
    for name in CONFIGS:
        command = [sys.executable, __file__, str(args.shared_data), "--rounds", str(args.rounds)]
        completed = subprocess.run(
            [*command, "--child", name], check=True, capture_output=True, text=True
        )
        results[name] = json.loads(completed.stdout)
        best = results[name]["best_files_per_second"]
        print(f"{name}: {best:.1f} files/s", file=sys.stderr)
    quality = draft_agreement(args.shared_data)
    report = render(results, quality, load)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


def files_for(kind: str, shared_data: Path) -> list[Path]:
    """The file set of a configuration."""
    if kind == "dicom":
        return [shared_data / "dicom" / name for name in DICOM_FILES]
    return sorted((shared_data / "chest_xray_fullres").glob("*/*.jpeg"))


def run_config(name: str, shared_data: Path, rounds: int) -> dict[str, Any]:
    """Time one configuration on one pinned core (runs in the child process)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    kind, draft = CONFIGS[name]
    options = DecodeOptions(
        draft_size=draft, chest_body_parts=(*DecodeOptions().chest_body_parts, "HIP")
    )
    files = files_for(kind, shared_data)
    for path in files:  # warm-up: imports, codec plugin discovery, page cache
        to_model_input(decode_path(path, options))
    tracemalloc.start()
    decode_seconds = resize_seconds = 0.0
    round_seconds: list[float] = []
    per_file: dict[str, float] = {}
    for _ in range(rounds):
        round_start = time.perf_counter()
        for path in files:
            start = time.perf_counter()
            radiograph = decode_path(path, options)
            decoded = time.perf_counter()
            to_model_input(radiograph)
            done = time.perf_counter()
            decode_seconds += decoded - start
            resize_seconds += done - decoded
            per_file[path.name] = min(per_file.get(path.name, float("inf")), done - start)
        round_seconds.append(time.perf_counter() - round_start)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    count = len(files) * rounds
    return {
        "files": len(files),
        "rounds": rounds,
        "decode_ms": 1000 * decode_seconds / count,
        "resize_ms": 1000 * resize_seconds / count,
        # Other processes only ever add time: the fastest round is the best estimate of
        # the decoder's own cost, the median says what a busy machine gives.
        "best_files_per_second": len(files) / min(round_seconds),
        "median_files_per_second": len(files) / statistics.median(round_seconds),
        "tracemalloc_peak_mb": traced_peak / 1024**2,
        # Linux reports ru_maxrss in KiB: the child's peak, interpreter and libraries included.
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "slowest": sorted(per_file.items(), key=lambda item: -item[1])[:3],
    }


def draft_agreement(shared_data: Path) -> dict[int, float]:
    """Mean |model input (draft) - model input (full decode)| in grey levels, per draft size."""
    files = files_for("jpeg", shared_data)
    full = [to_model_input(decode_path(p, DecodeOptions(draft_size=None))) for p in files]
    agreement = {}
    for draft in (224, 448):
        differences = [
            np.abs(
                to_model_input(decode_path(p, DecodeOptions(draft_size=draft))).astype(np.int16)
                - reference.astype(np.int16)
            ).mean()
            for p, reference in zip(files, full, strict=True)
        ]
        agreement[draft] = float(np.mean(differences))
    return agreement


def machine(load: tuple[float, float, float]) -> list[str]:
    """The lines that say where the figures come from."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pydicom": pydicom.__version__,
        "pillow": PIL.__version__,
    }
    for package in ("pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except ImportError:
            versions[package] = "absent"
    # GNU nproc honours OMP_NUM_THREADS, which this script sets to 1: ask without it.
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    nproc = subprocess.run(
        ["nproc"], capture_output=True, text=True, check=False, env=environment
    ).stdout.strip()
    return [
        f"- CPU: {model}; `nproc` = {nproc}; each run pinned to one core",
        f"- OS: {platform.platform()}",
        "- " + ", ".join(f"{name} {value}" for name, value in versions.items()),
        "- load average when the run started (other work on the machine): "
        + " ".join(f"{value:.2f}" for value in load),
    ]


def render(
    results: dict[str, dict[str, Any]],
    quality: dict[int, float],
    load: tuple[float, float, float],
) -> str:
    """The Markdown report."""
    lines = [
        "# Decoding benchmark",
        "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M %Z')} with:",
        "",
        "```",
        " ".join([".venv/bin/python", "bench/decode.py", *sys.argv[1:]]),
        "```",
        "",
        *machine(load),
        "",
        "Per file: `decode_path` (read, parse, decode, VOI/inversion to display pixels) then",
        "`to_model_input` (224 x 224 x 3 uint8), single-threaded, after one warm-up pass;",
        "ms/file are means over all rounds.",
        "DICOM: the five decodable real files of shared/data/dicom (two 2k x 2k JPEG 2000",
        "lossless, JPEG lossless 2140 x 1760, JPEG baseline 1024 x 1024, 8-bit native 211 x",
        "169). JPEG: the 60 full-resolution Kermany originals (about 400-2300 px).",
        "",
        "| configuration | files x rounds | decode ms/file | resize ms/file "
        "| files/s per core, best round | median round | tracemalloc peak MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {result['files']} x {result['rounds']} | {result['decode_ms']:.1f} "
            f"| {result['resize_ms']:.1f} | {result['best_files_per_second']:.1f} "
            f"| {result['median_files_per_second']:.1f} "
            f"| {result['tracemalloc_peak_mb']:.0f} | {result['max_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "Slowest files (ms, decode + resize, fastest of the rounds):",
        "",
    ]
    for name, result in results.items():
        slowest = ", ".join(f"{file} {1000 * seconds:.0f}" for file, seconds in result["slowest"])
        lines.append(f"- {name}: {slowest}")
    lines += [
        "",
        "Draft mode against a full decode, same 60 JPEGs: mean absolute difference of the",
        "model inputs in grey levels (0-255):",
        "",
        *(f"- draft {size}: {value:.2f}" for size, value in quality.items()),
        "",
        "Notes: tracemalloc counts Python and numpy allocations, not the codecs' own C",
        "buffers; peak RSS is the whole child process (interpreter, numpy, pydicom and",
        "Pillow; no TensorFlow). The machine was shared with other work (see the load",
        "average): the best round is the decoder's own speed, the median what a busy host",
        "gives.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
