"""`cxr-screen results`: list screening results from the results table."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import (
    MAX_SQL_LIMIT,
    CommandError,
    database_error,
    engine_for,
    settings_or_fail,
)
from cxr_screen.cli.output import OutputFormat, write_rows
from cxr_screen.cli.when import parse_when
from db.models import ScanStatus
from db.results import ResultFilter, ResultRow, list_results
from db.session import make_session_factory

TABLE_COLUMNS = (
    "scan_id",
    "received_at",
    "status",
    "label",
    "probability",
    "model_version",
    "modality",
    "view_position",
    "report",
    "heatmap",
    "source_path",
    "error",
)


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None


def results(
    since: Annotated[
        str | None,
        typer.Option(
            help="Only scans received at or after this time: 2026-11-29, "
            "2026-11-29T08:30 (UTC unless an offset is given), or an age: 24h, 7d."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only scans received before this time (same forms).")
    ] = None,
    status: Annotated[
        ScanStatus | None,
        typer.Option(
            help="queued: waiting for a worker; processing: being screened; done: "
            "has a result; failed: broken file or gave up after retries; rejected: "
            "valid file out of scope (not a chest radiograph, too large)."
        ),
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Only results with this label, e.g. PNEUMONIA or NORMAL.")
    ] = None,
    min_probability: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Only results whose positive-class probability is at least this."
        ),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Only results made by this model version.")
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=0, max=MAX_SQL_LIMIT, help="At most this many rows, newest first; 0 for all."
        ),
    ] = 100,
    output_format: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="table for people; csv for spreadsheets; jsonl (one JSON object per "
            "line, stable field names) for scripts.",
        ),
    ] = OutputFormat.TABLE,
) -> None:
    """List screening results: one row per received scan with its latest prediction.

    Each row is a file that arrived in the inbox, identified by the SHA-256 of its
    content. `label` is the model's verdict at the model's operating threshold,
    `probability` the probability of the positive class (PNEUMONIA), and `model_version`
    the model that made it. Rows without a label are still waiting, or were rejected or
    failed: `error` says why. `report_status` is the delivery of a DICOM scan's report
    to the PACS (pending, sent, failed, disabled; `report_error` says why it failed),
    `heatmap_status` its Grad-CAM heatmap (pending, done, failed; `heatmap_path` is the
    PNG). The same rows are in the SQL view `scan_results`.

    File names and header values are printed as text: markup such as `[b]` as typed,
    control characters escaped (`\\x1b`). In CSV, a text cell that starts with `=`, `+`,
    `-`, `@`, tab or carriage return gets a leading `'`, so that a spreadsheet shows it
    rather than running it as a formula; JSON lines keep the exact values, JSON-escaped.
    """
    settings = settings_or_fail()
    filters = ResultFilter(
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        status=status,
        label=label,
        min_probability=min_probability,
        model_version=model_version,
        limit=limit or None,
    )
    engine = engine_for(settings)
    try:
        with make_session_factory(engine)() as session:
            rows = list_results(session, filters=filters)
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()
    written = write_rows(
        (_with_short_names(row.to_dict()) for row in rows),
        columns=ResultRow.field_names(),
        output_format=output_format,
        table_columns=TABLE_COLUMNS,
        title="Screening results (newest first)",
    )
    if output_format is OutputFormat.TABLE and written == limit:
        typer.echo(f"(showing the newest {limit}; use --limit 0 for all)", err=True)


def _with_short_names(row: dict[str, Any]) -> dict[str, Any]:
    """The row with `report` and `heatmap` for the table's narrow columns (CSV and JSON
    lines keep the documented `report_status` and `heatmap_status` only)."""
    return {**row, "report": row["report_status"], "heatmap": row["heatmap_status"]}


__all__ = ["CommandError", "results"]
