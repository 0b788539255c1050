"""Per-process state of a worker, built on first use (after fork, never at import)."""

from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from db.session import make_engine, make_session_factory
from worker.decode_config import decode_options
from worker.filing import Filing
from worker.heatmaps import Heatmaps
from worker.inference import ModelCache
from worker.screening import ScreeningContext
from worker.settings import Settings, load_settings

_lock = threading.Lock()
_context: dict[int, ScreeningContext] = {}


def worker_name() -> str:
    """`host:pid`, recorded on claims and predictions."""
    return f"{socket.gethostname()}:{os.getpid()}"


def build_context(settings: Settings, *, file_results: bool = True) -> ScreeningContext:
    """Everything `screen_batch` needs, for these settings."""
    engine = make_engine(settings.storage.database_url)
    factory = make_session_factory(engine)
    return ScreeningContext(
        session_factory=factory,
        models=ModelCache(
            factory,
            precision=settings.screening.precision,
            xla=settings.screening.xla,
            max_batch=settings.screening.batch_size,
        ),
        decode_options=decode_options(settings),
        executor=ThreadPoolExecutor(
            settings.screening.decode_pool_size, thread_name_prefix="decode"
        ),
        worker_name=worker_name(),
        filing=filing_from(settings) if file_results else None,
        heatmaps=Heatmaps(settings.screening.heatmaps if file_results else "off"),
    )


def filing_from(settings: Settings) -> Filing:
    """The service's folders as absolute paths, symlinks kept as configured.

    Not resolved: scan rows record paths as the watcher saw them under the configured
    inbox, and the worker compares them with these roots as written.
    """
    return Filing(
        inbox=Path(os.path.abspath(settings.storage.inbox)),  # noqa: PTH100
        archive=Path(os.path.abspath(settings.storage.archive)),  # noqa: PTH100
        quarantine=Path(os.path.abspath(settings.storage.quarantine)),  # noqa: PTH100
    )


def process_context() -> ScreeningContext:
    """This process's context. Keyed by pid: a forked child never reuses its parent's
    engine, threads or TensorFlow state."""
    pid = os.getpid()
    with _lock:
        if pid not in _context:
            _context[pid] = build_context(load_settings())
        return _context[pid]
