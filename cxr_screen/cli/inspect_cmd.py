"""`cxr-screen inspect`: what the decoder makes of each file, and why, for an IT engineer."""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from PIL import Image
from pydicom.uid import UID
from rich.console import Console
from rich.table import Table

from cxr_screen.cli.common import CommandError, settings_or_fail
from cxr_screen.cli.inspect_heatmap import HeatmapWriter
from cxr_screen.cli.output import inert
from worker.decode_config import decode_options
from worker.imaging import (
    DecodeOptions,
    decode_path,
    read_metadata,
    to_model_input,
)
from worker.imaging.errors import ScreeningError, TransientError
from worker.imaging.pseudonym import PseudonymKeyError

ACCEPTED = "accepted"
# 255 bytes per file name, less `0000_` and `.heatmap.png` (and room for a longer index).
PREVIEW_STEM_BYTES = 232


class InspectFormat(enum.StrEnum):
    """How the findings are printed."""

    TABLE = "table"
    JSON = "json"


@dataclass(slots=True)
class Finding:
    """What the decoder made of one file."""

    path: Path
    outcome: str  # "accepted", or the scan status an error maps to
    code: str | None = None
    message: str | None = None
    metadata: dict[str, Any] | None = None
    decisions: list[str] = field(default_factory=list)
    preview: Path | None = None
    heatmap: Path | None = None
    verdict: str | None = None  # with --heatmap: the active model's label and probability

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, paths as strings."""
        return {
            "path": str(self.path),
            "outcome": self.outcome,
            "code": self.code,
            "message": self.message,
            "metadata": self.metadata,
            "decisions": self.decisions,
            "preview": str(self.preview) if self.preview else None,
            "heatmap": str(self.heatmap) if self.heatmap else None,
            "verdict": self.verdict,
        }


def inspect(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="DICOM, JPEG or PNG files; folders are searched recursively.",
            show_default=False,
        ),
    ],
    format: Annotated[
        InspectFormat,
        typer.Option("--format", help="table for people, json for scripts."),
    ] = InspectFormat.TABLE,
    preview: Annotated[
        Path | None,
        typer.Option(
            "--preview",
            help="Write a PNG of each accepted file's 224 x 224 model input to this folder.",
            file_okay=False,
        ),
    ] = None,
    heatmap: Annotated[
        Path | None,
        typer.Option(
            "--heatmap",
            help="Write each accepted file's Grad-CAM heatmap with the active model to this "
            "folder (the picture the worker keeps beside an archived scan), with its verdict.",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Show what the decoder makes of each file: header facts, decisions, or the error.

    Decisions are what the decoder chose (inversion, window, reduced-size decode);
    errors give the status the worker would record (rejected: valid but out of scope;
    failed: broken). Uses the same limits as the worker (CXR_MAX_FILE_MB, CXR_MAX_PIXELS,
    CXR_CHEST_BODY_PARTS). Exits 1 when any file would not be screened.

    It never writes a pseudonym key: with neither CXR_PSEUDONYM_KEY nor the service's
    var/pseudonym.key, patient references use a throw-away key (and differ from the
    service's). File names and header values are printed as text (markup as typed,
    control characters escaped); the JSON keeps them exact, JSON-escaped.
    """
    try:
        # Never writes a key: without one, a throw-away key is used (and said so).
        options = decode_options(settings_or_fail(), create_key=False)
    except PseudonymKeyError as exc:
        raise CommandError(str(exc)) from None
    if preview is not None:
        preview.mkdir(parents=True, exist_ok=True)
    writer: HeatmapWriter | None = None
    if heatmap is not None:
        writer = HeatmapWriter(settings_or_fail(), heatmap)
        heatmap.mkdir(parents=True, exist_ok=True)
    findings = [
        _inspect_file(path, options, preview, index) for index, path in enumerate(_expand(files))
    ]
    if writer is not None:
        for index, finding in enumerate(findings):
            if finding.outcome == ACCEPTED:
                _explain(writer, finding, options, index)
    if format is InspectFormat.JSON:
        # ensure_ascii: control characters in names and header values travel as \\uXXXX.
        document = [f.to_dict() for f in findings]
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=True) + "\n")
    else:
        _print_table(findings)
    if not findings or any(f.outcome != ACCEPTED for f in findings):
        raise typer.Exit(1)


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given, folders replaced by the files under them (sorted)."""
    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            expanded.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            expanded.append(path)
    return expanded


def _inspect_file(path: Path, options: DecodeOptions, preview: Path | None, index: int) -> Finding:
    try:
        radiograph = decode_path(path, options)
    except ScreeningError as exc:
        return Finding(path, str(exc.status), exc.code, exc.message, _header_facts(path, options))
    except TransientError as exc:
        return Finding(path, "failed", exc.code, exc.message)
    finding = Finding(
        path, ACCEPTED, metadata=radiograph.metadata.to_dict(), decisions=list(radiograph.decisions)
    )
    if preview is not None:
        # The index keeps two scan.dcm from different folders apart.
        finding.preview = preview / f"{index:04d}_{_fitting(path.stem)}.png"
        Image.fromarray(to_model_input(radiograph)).save(finding.preview)
    return finding


def _explain(writer: HeatmapWriter, finding: Finding, options: DecodeOptions, index: int) -> None:
    name = f"{index:04d}_{_fitting(finding.path.stem)}.heatmap.png"
    explained = writer.write(finding.path, options, name)
    if isinstance(explained, str):
        finding.decisions.append(f"no heatmap: {explained}")
        return
    finding.heatmap = explained.picture
    finding.verdict = f"{explained.label} {explained.probability:.3f} ({writer.model.version})"


def _header_facts(path: Path, options: DecodeOptions) -> dict[str, Any] | None:
    """What the header of a rejected or broken file says, when it can be read at all."""
    try:
        return read_metadata(path, options).to_dict()
    except (ScreeningError, TransientError):
        return None


def _print_table(findings: list[Finding]) -> None:
    table = Table(show_lines=True)
    for name in ("file", "outcome", "modality", "body part", "view", "photometric", "bits"):
        table.add_column(name, overflow="fold")
    table.add_column("size", no_wrap=True)
    table.add_column("transfer syntax", overflow="fold")
    table.add_column("decisions / error", overflow="fold", ratio=3)
    for finding in findings:
        meta = finding.metadata or {}
        size = f"{meta['columns']}x{meta['rows']}" if meta.get("rows") else ""
        syntax = UID(meta["transfer_syntax"]).name if meta.get("transfer_syntax") else ""
        outcome = finding.outcome if finding.code is None else f"{finding.outcome}\n{finding.code}"
        details = finding.message or "\n".join(finding.decisions)
        if finding.preview is not None:
            details += f"\npreview: {finding.preview}"
        if finding.heatmap is not None:
            details += f"\n{finding.verdict}; heatmap: {finding.heatmap}"
        cells = (
            str(finding.path),
            outcome,
            _cell(meta.get("modality")),
            _cell(meta.get("body_part")),
            _cell(meta.get("view_position")),
            _cell(meta.get("photometric_interpretation")),
            _cell(meta.get("bits_stored")),
            size,
            syntax,
            details,
        )
        # File names and header values come from the sender: shown as text, never markup.
        table.add_row(*(inert(cell) for cell in cells))
    # Piped into a file or `less`, a terminal's 80 columns would fold every cell.
    width = None if sys.stdout.isatty() else 200
    Console(file=sys.stdout, soft_wrap=False, width=width).print(table)


def _fitting(stem: str) -> str:
    """`stem` cut to fit a 255-byte file name with the index and `.png` around it."""
    # "ignore": a character cut in half, or a name that is not UTF-8, is left out.
    kept = stem.encode("utf-8", "surrogateescape")[:PREVIEW_STEM_BYTES].decode("utf-8", "ignore")
    return kept or "preview"


def _cell(value: object) -> str:
    return "" if value is None else str(value)
