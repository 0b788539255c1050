"""Run the installed `cxr-screen` command in a subprocess, as a person or a script would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def cxr_screen_executable() -> str:
    """The console script installed beside this interpreter (the venv's)."""
    candidate = Path(sys.executable).with_name("cxr-screen")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("cxr-screen")
    if found is None:
        raise RuntimeError("cxr-screen is not installed: run `pip install -e .[dev]`")
    return found


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `cxr-screen ARGS` in `cwd` with only the CXR_* variables given in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    clean.update(env or {})
    return subprocess.run(
        [cxr_screen_executable(), *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
