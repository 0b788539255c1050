"""One log format for every process, so the combined log of a service reads as one."""

from __future__ import annotations

import logging
import os
import re

# What a terminal or a log reader would act on, in a file name, a header value or a
# peer's AE title quoted in a message: C0 and C1 controls (escape sequences), line
# breaks (a name with a newline would forge a log line), bidi overrides ("Trojan
# Source") and lone surrogates (a name that is not UTF-8). Shown as escapes (`\x1b`).
_UNSAFE_IN_MESSAGE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
# A traceback keeps its line breaks; the rest is escaped as in messages.
_UNSAFE_IN_TRACEBACK = re.compile(
    r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapingFormatter(logging.Formatter):
    """A formatter whose lines are text: whatever a message quotes cannot act on the reader."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = _escape(_UNSAFE_IN_MESSAGE, record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:  # noqa: N802 (logging's name)
        return _escape(_UNSAFE_IN_TRACEBACK, super().formatException(ei))  # type: ignore[arg-type]


def configure_logging(level: str) -> None:
    """Timestamped, escaped lines with the process role and pid; idempotent."""
    root = logging.getLogger()
    if getattr(root, "_cxr_configured", False):
        root.setLevel(level)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        EscapingFormatter(f"%(asctime)s %(levelname)-7s [{os.getpid()}] %(name)s: %(message)s")
    )
    root.handlers[:] = [handler]
    root.setLevel(level)
    root._cxr_configured = True  # type: ignore[attr-defined]
