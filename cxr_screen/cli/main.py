"""Entry point of the `cxr-screen` command: one Typer app, one-line errors for people."""

from __future__ import annotations

import os
import sys

import typer

from cxr_screen.cli.check_cmd import check
from cxr_screen.cli.common import CommandError
from cxr_screen.cli.db_cmd import db_app
from cxr_screen.cli.inspect_cmd import inspect
from cxr_screen.cli.receive_cmd import receive
from cxr_screen.cli.reports_cmd import reports_app
from cxr_screen.cli.results_cmd import results
from cxr_screen.cli.screen_cmd import screen
from cxr_screen.cli.service_cmd import beat, worker
from cxr_screen.cli.training_cmd import evaluate, models_app, train
from cxr_screen.cli.up_cmd import up
from cxr_screen.cli.users_cmd import users_app
from cxr_screen.cli.watch_cmd import watch
from cxr_screen.cli.web_cmd import web
from worker.logs import configure_logging

app = typer.Typer(
    name="cxr-screen",
    help="Chest X-ray screening: drop scans in a folder, get NORMAL/PNEUMONIA results in a "
    "database. Configure with CXR_* environment variables (see the README).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
)
app.command("up")(up)
app.add_typer(db_app, name="db")
app.command("results")(results)
app.command("check")(check)
app.command("screen")(screen)
app.command("worker")(worker)
app.command("beat")(beat)
app.command("inspect")(inspect)
app.command("receive")(receive)
app.add_typer(reports_app, name="reports")
app.command("train")(train)
app.command("evaluate")(evaluate)
app.add_typer(models_app, name="models")
app.command("watch")(watch)
app.command("web")(web)
app.add_typer(users_app, name="users")


# Every file and folder the service creates (databases, the broker file, archived and
# quarantined scans, reasons, keys, reports) holds or points at patient data: never
# world-readable, whatever the login shell's umask.
SERVICE_UMASK = 0o027


def main() -> None:
    """Run the CLI; problems a person can fix are one line on stderr and exit status 2."""
    os.umask(SERVICE_UMASK | os.umask(SERVICE_UMASK))
    # Every command's warnings go through the escaping formatter (logging's last-resort
    # handler would print a hostile file name raw); the service commands set their level.
    configure_logging("WARNING")
    try:
        app()
    except CommandError as exc:
        typer.echo(f"cxr-screen: error: {exc}", err=True)
        sys.exit(2)
