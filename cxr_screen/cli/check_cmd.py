"""`cxr-screen check`: is this host ready to run the service? (Also the containers' healthcheck.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from kombu.connection import Connection
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import redacted, scrubbed, settings_or_fail
from cxr_screen.cli.output import printable
from db.migrate import current_revision, head_revision
from db.model_registry import get_active_model
from db.session import make_engine, make_session_factory
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


def check(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only problems.")] = False,
) -> None:
    """Check the configuration, database, broker and folders; exit 1 if any is not usable.

    A missing model is reported but is not a failure: scans wait safely until one is
    active.
    """
    settings = settings_or_fail()
    findings = [*_database(settings), _broker(settings), *_folders(settings)]
    for finding in findings:
        if finding.ok and quiet:
            continue
        mark = "ok  " if finding.ok else ("FAIL" if finding.fatal else "warn")
        typer.echo(printable(f"{mark} {finding.name:<10} {finding.detail}"), err=not finding.ok)
    if any(not f.ok and f.fatal for f in findings):
        raise typer.Exit(1)
