"""Run the service's processes as supervised children with one combined, prefixed log."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A process to keep running: a short name for the log and its argv."""

    name: str
    argv: tuple[str, ...]


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes]
    started: float
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Start children, restart the ones that crash, stop them all on request.

    Each child runs in its own process group, so a signal reaches its threads and its
    own children (a Celery worker's pool), and a Ctrl-C in the terminal reaches only the
    supervisor, which then stops the children in order.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        env: dict[str, str] | None = None,
        output: IO[str] | None = None,
        max_restarts_per_minute: int = 5,
    ) -> None:
        self._specs = list(specs)
        self._env = env
        self._output = output or sys.stdout
        self._write_lock = threading.Lock()
        self._children: dict[str, _Child] = {}
        self._stopping = threading.Event()
        self._max_restarts = max_restarts_per_minute
        self._width = max(len(s.name) for s in self._specs)

    def _emit(self, name: str, line: str) -> None:
        with self._write_lock:
            self._output.write(f"{name:<{self._width}} | {line}")
            if not line.endswith("\n"):
                self._output.write("\n")
            self._output.flush()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._emit(name, raw.decode("utf-8", errors="replace"))
        stream.close()

    def _start(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            list(spec.argv),
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert process.stdout is not None
        threading.Thread(
            target=self._pump,
            args=(spec.name, process.stdout),
            name=f"log-{spec.name}",
            daemon=True,
        ).start()
        self._emit("up", f"started {spec.name} (pid {process.pid})")
        return process

    def start(self) -> None:
        """Start every child."""
        for spec in self._specs:
            self._children[spec.name] = _Child(spec, self._start(spec), time.monotonic())

    def request_stop(self) -> None:
        """Ask `run` to return (safe from a signal handler)."""
        self._stopping.set()

    def run(self, poll_seconds: float = 0.5) -> None:
        """Keep the children alive until `request_stop`; give up on one that keeps dying."""
        while not self._stopping.wait(poll_seconds):
            for child in list(self._children.values()):
                code = child.process.poll()
                if code is None or self._stopping.is_set():
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60]
                if len(child.restarts) >= self._max_restarts:
                    self._emit(
                        "up",
                        f"{child.spec.name} exited ({code}) "
                        f"{self._max_restarts} times within a minute; not restarting "
                        "it: read its log above, fix the cause, and start again",
                    )
                    del self._children[child.spec.name]
                    continue
                self._emit("up", f"{child.spec.name} exited ({code}); restarting")
                child.restarts.append(now)
                child.process = self._start(child.spec)

    def stop(self, timeout: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every child (Celery finishes its current batch), SIGKILL after `timeout`.

        Returns each child's exit code.
        """
        self._stopping.set()
        for child in self._children.values():
            if child.process.poll() is None:
                self._emit("up", f"stopping {child.spec.name}")
                _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self._children.values():
            remaining = max(0.0, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                self._emit(
                    "up",
                    f"{child.spec.name} did not stop within {timeout:.0f}s; "
                    "killing it (its scans go back to the queue after the claim "
                    "timeout)",
                )
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()
        return {name: c.process.returncode for name, c in self._children.items()}


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child may have exited between the check and the signal: nothing to do then.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
