"""Log lines are text: a hostile name quoted in a message cannot act on the reader."""

from __future__ import annotations

import logging
import sys

from worker.logs import EscapingFormatter


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("bad \x1b[2J name\nsecond line")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("t", logging.WARNING, __file__, 1, message, args, info)


def test_controls_line_breaks_and_bidi_overrides_are_escaped() -> None:
    line = EscapingFormatter("%(message)s").format(
        _record("scan %s: rejected", "\x1b]0;pwned\x07\nFAKE forged line\u202egnp.exe")
    )
    assert line == "scan \\x1b]0;pwned\\x07\\nFAKE forged line\\u202egnp.exe: rejected"
    assert "\n" not in line


def test_a_traceback_keeps_its_lines_and_loses_its_escape_sequences() -> None:
    text = EscapingFormatter("%(message)s").format(_record("failed", exc=True))
    assert text.startswith("failed\nTraceback (most recent call last):\n")
    assert "ValueError: bad \\x1b[2J name\nsecond line" in text
    assert "\x1b" not in text


def test_plain_text_and_non_ascii_names_are_left_as_they_are() -> None:
    line = EscapingFormatter("%(message)s").format(_record("scan %s", "Röntgen 中 [b].dcm"))
    assert line == "scan Röntgen 中 [b].dcm"
