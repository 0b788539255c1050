"""Shared helpers of the benchmarks: the machine description and result files."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from worker.accelerator import cpu_has_amx_bf16

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"


def machine() -> str:
    """One line: CPU model, cores, memory, Python and TensorFlow-relevant versions."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 1024**2:.0f} GiB RAM"
    # bfloat16 speed depends on these units: figures with and without them differ 3x.
    if cpu_has_amx_bf16():
        cpu += " with AMX-BF16"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}{_gpus()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def _gpus() -> str:
    """', GPU: <names>' where nvidia-smi answers, else nothing."""
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            text=True,
            capture_output=True,
            check=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f", GPU: {'; '.join(names.splitlines())}" if names else ""


def git_revision() -> str:
    """The commit the benchmark ran on (with `+dirty` for uncommitted changes)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            text=True,
            capture_output=True,
            check=True,
        ).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    """The current UTC time, to the minute."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
