"""Write rows as a rich table, CSV or JSON lines, the three formats the CLI offers."""

from __future__ import annotations

import csv
import enum
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

# C0 and C1 control characters and DEL: an escape sequence in a file name or header value
# must never reach the terminal (it could retitle, clear or rewrite what the reader sees).
# Tab and newline stay (a cell may fold). The bidirectional overrides, isolates and marks
# and the line separators are escaped too: they reorder what a reader sees, so that
# `scan\u202egpj.exe` would read as `scanexe.jpg` ("Trojan Source"). Lone surrogates (a
# file name that is not UTF-8, as Python decodes it) cannot be written to a UTF-8 stream.
_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
# A CSV cell a spreadsheet would run as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class OutputFormat(enum.StrEnum):
    """How a listing is printed."""

    TABLE = "table"
    CSV = "csv"
    JSONL = "jsonl"


def write_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    columns: Sequence[str],
    output_format: OutputFormat,
    table_columns: Sequence[str] | None = None,
    title: str | None = None,
    stream: TextIO | None = None,
) -> int:
    """Print `rows`; return how many were written.

    CSV always starts with its header (an empty result is still a valid file); JSON
    lines carry every column; the table shows `table_columns` to fit a terminal.

    Every value is inert text, whoever chose it (file names come from whoever writes
    into the inbox, header values from the sender): the table shows rich markup such as
    `[/b]` as typed and control characters escaped (`\\x1b`); CSV escapes control
    characters too and puts a `'` before a text cell starting with `=`, `+`, `-`, `@`,
    tab or carriage return, so that a spreadsheet shows it rather than running it as a
    formula (OWASP, "CSV injection"); JSON lines keep the exact values, JSON-escaped
    (`\\u001b`).
    """
    out = stream or sys.stdout
    count = 0
    if output_format is OutputFormat.CSV:
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(row.get(k)) for k in columns})
            count += 1
        return count
    if output_format is OutputFormat.JSONL:
        for row in rows:
            # ensure_ascii: control characters and every non-ASCII one travel as \\uXXXX.
            record = {k: row.get(k) for k in columns}
            out.write(json.dumps(record, sort_keys=False, ensure_ascii=True) + "\n")
            count += 1
        return count
    shown = list(table_columns or columns)
    table = Table(title=inert(title) if title else None, show_lines=False)
    for name in shown:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(inert(_cell(row.get(name))) for name in shown))
        count += 1
    # Piped into a file or `less`, a terminal's 80 columns would fold every cell.
    width = None if out.isatty() else 240
    Console(file=out, soft_wrap=False, width=width).print(table)
    return count


def printable(text: str) -> str:
    """`text` with control characters shown as escapes (`\\x1b`), never interpreted."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def inert(text: str) -> Text:
    """A table cell that is plain text: no rich markup, no control characters."""
    return Text(printable(text))


def csv_cell(value: Any) -> Any:
    """A CSV value that a spreadsheet shows as text, as OWASP advises against CSV injection.

    A text cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading
    `'`; control characters are shown escaped, as in the table. Numbers stay numbers.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    text = printable(value)
    return "'" + text if value.startswith(_FORMULA_START) else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T" and value[4:5] == "-":
        return value[:19].replace("T", " ")  # ISO timestamp: seconds are enough in a table
    return str(value)
