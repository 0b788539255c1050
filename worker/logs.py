"""One log format for every process, so the combined log of a service reads as one."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str) -> None:
    """Timestamped lines with the process role and pid; idempotent."""
    root = logging.getLogger()
    if getattr(root, "_cxr_configured", False):
        root.setLevel(level)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s [{os.getpid()}] %(name)s: %(message)s")
    )
    root.handlers[:] = [handler]
    root.setLevel(level)
    root._cxr_configured = True  # type: ignore[attr-defined]
