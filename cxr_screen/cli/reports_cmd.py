"""`cxr-screen reports ...`: the DICOM reports sent back to the PACS: list them, re-send some."""

from __future__ import annotations

import enum
import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from cxr_screen.cli.common import (
    MAX_SQL_LIMIT,
    database_error,
    engine_for,
    settings_or_fail,
)
from cxr_screen.cli.output import OutputFormat, printable, write_rows
from db.models import ReportStatus, ScanStatus
from db.report_admin import (
    Refusal,
    Refused,
    ReportRow,
    count_reports,
    list_reports,
    requeue_reports,
)
from db.session import make_session_factory, session_scope
from db.types import utcnow
from worker.settings import Settings

reports_app = typer.Typer(
    help="The DICOM Structured Reports sent back to the PACS: list their delivery, re-send some.",
    no_args_is_help=True,
)

# Table headings for the stable field names of `ReportRow` (JSON keeps the field names).
TABLE_HEADINGS = {
    "scan_id": "scan",
    "report_status": "status",
    "report_attempts": "attempts",
    "report_next_attempt_at": "next attempt",
    "report_sent_at": "sent at",
    "report_error": "error",
    "report_sop_instance_uid": "report SOP Instance UID",
}
# Scan ids a `resend` names in its output; the rest are counted.
SHOWN_IDS = 50


class ListFormat(enum.StrEnum):
    """How `reports list` prints."""

    TABLE = "table"
    JSON = "json"


@contextmanager
def _database(settings: Settings) -> Iterator[Session]:
    """A transaction on the configured database; its failures as one-line errors."""
    engine = engine_for(settings)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()


def _one_line(text: str | None) -> str | None:
    # A driver's or a PACS's message may span lines; a table row shows it as one.
    if text is None:
        return None
    return printable(text).replace("\n", "\\n").replace("\t", "\\t")


@reports_app.command("list")
def list_cmd(
    status: Annotated[
        ReportStatus | None,
        typer.Option(
            help="pending: waiting for the sender (new, or retrying after a failed try); "
            "sent: stored by the destination; failed: given up after "
            "CXR_REPORT_MAX_ATTEMPTS tries, or no report can be built; disabled: "
            "screened while reports were off, never sent."
        ),
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only failed reports (the same as --status failed).")
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            min=0, max=MAX_SQL_LIMIT, help="At most this many rows, newest scan first; 0 for all."
        ),
    ] = 100,
    output_format: Annotated[
        ListFormat,
        typer.Option(
            "--format",
            "-f",
            help="table for people; json (counts and rows, stable field names) for scripts.",
        ),
    ] = ListFormat.TABLE,
) -> None:
    """List the scans that have a report status, newest first, with the counts per status.

    Only DICOM scans that were screened have one (JPEG and PNG scans never get a report).
    Each row: the scan id, the report's status, the tries so far, when the next try is
    due, when the destination stored it, the last try's error and the report's SOP
    Instance UID. The counts at the top are over every scan, whatever the filters.
    Errors are printed as one line of text (control characters and line breaks
    escaped); the JSON keeps them exact, JSON-escaped.
    """
    if failed and status not in (None, ReportStatus.FAILED):
        raise typer.BadParameter(
            f"--failed means --status failed; it cannot be combined with --status {status}",
            param_hint="'--failed'",
        )
    if failed:
        status = ReportStatus.FAILED
    settings = settings_or_fail()
    with _database(settings) as session:
        counts = count_reports(session)
        rows = list_reports(session, status=status, limit=limit or None)
    if output_format is ListFormat.JSON:
        document = {
            "counts": {s.value: n for s, n in counts.items()},
            "reports": [row.to_dict() for row in rows],
        }
        # ensure_ascii: control characters in a PACS's error text travel as \\uXXXX.
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=True) + "\n")
        return
    typer.echo("reports: " + ", ".join(f"{n} {s.value}" for s, n in counts.items()))
    written = write_rows(
        (_table_row(row) for row in rows),
        columns=list(TABLE_HEADINGS.values()),
        output_format=OutputFormat.TABLE,
        title="Reports (newest scan first)" + (f", {status.value} only" if status else ""),
    )
    if written == limit:
        typer.echo(f"(showing the newest {limit}; use --limit 0 for all)", err=True)


def _table_row(row: ReportRow) -> dict[str, Any]:
    values = row.to_dict()
    values["report_error"] = _one_line(row.report_error)
    return {heading: values[name] for name, heading in TABLE_HEADINGS.items()}


@reports_app.command("resend")
def resend(
    scan_ids: Annotated[
        list[int] | None,
        typer.Argument(
            min=1,
            max=MAX_SQL_LIMIT,
            metavar="SCAN_ID",
            show_default=False,
            help="Scans whose report to send again (ids as `reports list` and `results` "
            "show them), whatever its status.",
        ),
    ] = None,
    failed: Annotated[
        bool,
        typer.Option("--failed", help="Every report that was given up on (status failed)."),
    ] = False,
) -> None:
    """Queue reports to be sent again: the scans named, and with --failed every failed one.

    Each is made due now: status pending, attempts back to 0 (so it gets every try
    again, CXR_REPORT_MAX_ATTEMPTS), last error cleared. The scheduler's report sender
    (`cxr-screen up` or `beat`, every CXR_REPORT_INTERVAL_S) sends it on its next pass
    to CXR_REPORT_DESTINATION; while reports are off it waits until they are turned on.

    A report that was already sent may be sent again by naming its scan: the kept copy
    goes out with the same SOP Instance UID, so the PACS keeps one instance, not a
    copy. A `disabled` one (screened while reports were off) is sent when named too.
    A scan without a report status (a JPEG or PNG scan, one not screened) is refused by
    id, saying why; the exit status is then 1, after the others are queued.
    """
    if not scan_ids and not failed:
        raise typer.BadParameter(
            "name the scans whose reports to send again (SCAN_ID ...), or give --failed "
            "for every failed report, or both",
            param_hint="'SCAN_ID' / '--failed'",
        )
    settings = settings_or_fail()
    with _database(settings) as session:
        outcome = requeue_reports(session, scan_ids=scan_ids or (), failed=failed, now=utcnow())
    for refused in outcome.refused:
        typer.echo(f"cxr-screen: scan {refused.scan_id} not queued: {_why(refused)}", err=True)
    if outcome.queued:
        before = Counter(item.previous_status.value for item in outcome.queued)
        ids = [str(item.scan_id) for item in outcome.queued]
        shown = ", ".join(ids[:SHOWN_IDS]) + (
            f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
        )
        one = len(ids) == 1
        typer.echo(
            f"queued {len(ids)} report{'' if one else 's'} to send again, was "
            + ", ".join(f"{n} {s}" for s, n in sorted(before.items()))
            + f": scan{'' if one else 's'} {shown}"
        )
        if settings.pacs.reports_enabled:
            typer.echo(
                f"the report sender sends them to {settings.pacs.report_destination} on its "
                f"next pass (every {settings.pacs.report_interval_s:g} s, in `cxr-screen up` "
                "or `beat`)"
            )
        else:
            typer.echo(
                "reports are off (CXR_REPORTS_ENABLED): they are sent once reports are on",
                err=True,
            )
    elif not outcome.refused:
        typer.echo("no report queued: no report has failed")
    if outcome.refused:
        raise typer.Exit(1)


def _why(refused: Refused) -> str:
    status = refused.scan_status.value if refused.scan_status else "unknown"
    if refused.reason is Refusal.NO_SUCH_SCAN:
        return "there is no such scan (`cxr-screen reports list` shows the scans with a report)"
    if refused.reason is Refusal.NOT_DICOM:
        kind = f"a {refused.format.upper()}" if refused.format else "not a DICOM"
        return f"it is {kind} scan: reports go back to the PACS for DICOM scans only"
    if refused.reason is Refusal.NOT_SCREENED:
        waiting = refused.scan_status in (ScanStatus.QUEUED, ScanStatus.PROCESSING)
        return f"it has no result to report (status {status})" + (
            "; its report follows once it is screened" if waiting else ""
        )
    return (
        "it was screened, but the report sender has not given it a report status yet; "
        "it does on its next pass"
    )


__all__ = ["reports_app"]
