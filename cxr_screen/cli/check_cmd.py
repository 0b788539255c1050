"""`cxr-screen check`: is this host ready to run the service? (Also the containers' healthcheck.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from kombu.connection import Connection
from pynetdicom.sop_class import ComprehensiveSRStorage  # type: ignore[attr-defined]
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import redacted, scrubbed, settings_or_fail
from cxr_screen.cli.output import printable
from db.migrate import current_revision, head_revision
from db.model_registry import get_active_model
from db.session import make_engine, make_session_factory
from worker.pacs.aet import parse_destination
from worker.pacs.echo import echo
from worker.settings import Settings


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome; `fatal` ones make the command fail."""

    name: str
    ok: bool
    detail: str
    fatal: bool = True


def _database(settings: Settings) -> list[Finding]:
    engine = make_engine(settings.storage.database_url)
    where = redacted(settings.storage.database_url)
    try:
        revision = current_revision(engine)
        head = head_revision()
        findings = [
            Finding(
                "database",
                revision == head,
                f"{where} at revision {revision or 'empty'}"
                + ("" if revision == head else f"; run `cxr-screen db upgrade` (newest is {head})"),
            )
        ]
        if revision == head:
            with make_session_factory(engine)() as session:
                row = get_active_model(session)
                active = row.version if row is not None else None
            findings.append(
                Finding(
                    "model",
                    active is not None,
                    f"active model {active}"
                    if active
                    else "no active model: scans wait in the queue until one is trained "
                    "(`cxr-screen train`) or promoted",
                    fatal=False,
                )
            )
        return findings
    except (OperationalError, ProgrammingError) as exc:
        lines = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
        detail = scrubbed(lines[0], settings.storage.database_url)
        return [Finding("database", False, f"{where}: {detail}")]
    finally:
        engine.dispose()


def _broker(settings: Settings) -> Finding:
    # Never the URL as given: it may carry the broker's password (so may a driver's error).
    where = redacted(settings.storage.broker_url)
    if settings.storage.broker_url.startswith("sqla+sqlite:///"):
        Path(settings.storage.broker_url.removeprefix("sqla+sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    try:
        with Connection(settings.storage.broker_url, connect_timeout=5) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # noqa: BLE001 - every transport raises its own kind
        return Finding(
            "broker", False, f"{where}: {scrubbed(str(exc), settings.storage.broker_url)}"
        )
    return Finding("broker", True, f"{where} reachable")


def _folders(settings: Settings) -> list[Finding]:
    findings = []
    for name, folder in (
        ("inbox", settings.storage.inbox),
        ("archive", settings.storage.archive),
        ("quarantine", settings.storage.quarantine),
        ("models", settings.storage.model_dir),
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".cxr-write-check"
            probe.write_bytes(b"")
            probe.unlink()
            findings.append(Finding(name, True, f"{folder} writable"))
        except OSError as exc:
            findings.append(
                Finding(name, False, f"{folder}: {exc.strerror}; check the mount and permissions")
            )
    return findings


def _report_destination(settings: Settings) -> Finding:
    """With reports on: does CXR_REPORT_DESTINATION answer a C-ECHO from this node?"""
    if not settings.pacs.reports_enabled:
        return Finding(
            "reports", True, "reports are off (CXR_REPORTS_ENABLED): no destination to C-ECHO"
        )
    if not settings.pacs.report_destination:
        # The settings refuse this already; kept for settings built another way.
        return Finding(
            "reports",
            False,
            "reports are on but CXR_REPORT_DESTINATION is not set; give the PACS as "
            "AE_TITLE@host:port, or turn reports off",
        )
    destination = parse_destination(settings.pacs.report_destination)
    outcome = echo(
        destination,
        calling_ae_title=settings.pacs.dicom_ae_title,
        timeout=settings.pacs.dicom_timeout_s,
        sop_classes=[ComprehensiveSRStorage],
    )
    if not outcome.answered:
        return Finding("reports", False, f"report destination {outcome}")
    if outcome.not_accepted:
        return Finding(
            "reports",
            False,
            f"report destination {destination} answers C-ECHO but does not accept "
            f"Comprehensive SR Storage ({ComprehensiveSRStorage}), so it would refuse "
            f"every report; allow that SOP class for AE title {settings.pacs.dicom_ae_title} "
            "in the PACS",
        )
    return Finding(
        "reports",
        True,
        f"report destination {destination} answers C-ECHO "
        f"(calling AE title {settings.pacs.dicom_ae_title})",
    )


def check(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only problems.")] = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Only what this host's service needs to run: no C-ECHO to the PACS (for "
            "container health checks: a PACS outage delays reports, it does not stop "
            "screening).",
        ),
    ] = False,
) -> None:
    """Check the configuration, database, broker, folders and PACS; exit 1 if any is unusable.

    A missing model is reported but is not a failure: scans wait safely until one is
    active. With reports on (`CXR_REPORTS_ENABLED`), `CXR_REPORT_DESTINATION` must
    answer a C-ECHO from this node's AE title (`CXR_DICOM_AE_TITLE`) within
    `CXR_DICOM_TIMEOUT_S` and accept Comprehensive SR Storage: a refused association,
    no answer, or a status other than success fails the check, saying what to change.
    """
    settings = settings_or_fail()
    findings = [
        *_database(settings),
        _broker(settings),
        *_folders(settings),
        *([] if local else [_report_destination(settings)]),
    ]
    for finding in findings:
        if finding.ok and quiet:
            continue
        mark = "ok  " if finding.ok else ("FAIL" if finding.fatal else "warn")
        typer.echo(printable(f"{mark} {finding.name:<10} {finding.detail}"), err=not finding.ok)
    if any(not f.ok and f.fatal for f in findings):
        raise typer.Exit(1)
