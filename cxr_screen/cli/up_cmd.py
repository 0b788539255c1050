"""`cxr-screen up`: the whole service on one host, as supervised child processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType
from typing import Annotated

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import CommandError, database_error, redacted, settings_or_fail
from cxr_screen.cli.output import printable
from cxr_screen.cli.web_cmd import check_sign_in
from db.migrate import upgrade
from db.model_registry import get_active_model
from db.session import make_engine, make_session_factory
from worker.celery_app import prepare_embedded_broker
from worker.settings import Settings
from worker.supervisor import ChildSpec, Supervisor

CLI = (sys.executable, "-m", "cxr_screen.cli")
RESULTS_SQL = "SELECT * FROM scan_results ORDER BY received_at DESC"


def _prepare_database(settings: Settings) -> str | None:
    """Migrate, then return the active model's version (None when there is none).

    With CXR_WEB_ENABLED, refuse (before anything starts) when nobody could sign in to
    the web pages: the check `cxr-screen web` makes, which would otherwise make the web
    child exit and be restarted until the supervisor gives up on it.
    """
    engine = make_engine(settings.storage.database_url)
    try:
        upgrade(engine)
        with make_session_factory(engine)() as session:
            if settings.web.web_enabled:
                check_sign_in(settings, session)
            active = get_active_model(session)
            return active.version if active is not None else None
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()


def _bundled_model(settings: Settings) -> str | None:
    """Put the bundled default model in service; its version, or None (with a warning)."""
    # Imported here: TensorFlow takes seconds to load, and a started site needs none of it.
    from trainer.bundled import install_bundled

    engine = make_engine(settings.storage.database_url)
    try:
        outcome = install_bundled(settings, make_session_factory(engine))
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    finally:
        engine.dispose()
    if outcome.installed:
        typer.echo(outcome.message)
        return outcome.version
    if outcome.version is not None:  # another process put a model in service meanwhile
        return outcome.version
    typer.secho(f"warning: {printable(outcome.message)}", fg="yellow", err=True)
    return None


def _first_model(settings: Settings) -> None:
    """Train a first model in the foreground (with its progress bar), or say what is missing."""
    if settings.training.data_dir is None:
        typer.secho(
            "warning: no model is active and CXR_DATA_DIR is not set, so none can be "
            "trained. The service starts anyway: scans dropped in the inbox are recorded and "
            "wait safely in the queue, and are screened as soon as a model is active. "
            "Provide labelled folders (CXR_DATA_DIR with train/NORMAL, train/PNEUMONIA, "
            "val/...) and backbone weights (CXR_BASE_WEIGHTS), then run `cxr-screen train` "
            "or restart `cxr-screen up`.",
            fg="yellow",
            err=True,
        )
        return
    typer.echo(
        f"No model is active: training one on {settings.training.data_dir} first "
        f"(backbone {settings.training.backbone}, weights {settings.training.base_weights})."
    )
    result = subprocess.run([*CLI, "train"], check=False)
    if result.returncode != 0:
        typer.secho(
            "warning: training the first model failed (see above); the service "
            "starts anyway and scans wait in the queue until a model is active.",
            fg="yellow",
            err=True,
        )


def children(settings: Settings) -> list[ChildSpec]:
    """The processes `up` supervises: the DICOM receiver only when CXR_RECEIVE_ENABLED is set
    and the web pages only when CXR_WEB_ENABLED is set (each listens on a port, which a
    site must open on purpose)."""
    specs = [
        ChildSpec("watcher", (*CLI, "watch")),
        ChildSpec("worker", (*CLI, "worker", "--queues", "screening")),
        ChildSpec("trainer", (*CLI, "worker", "--queues", "training")),
        ChildSpec("beat", (*CLI, "beat")),
    ]
    if settings.pacs.receive_enabled:
        specs.append(ChildSpec("receiver", (*CLI, "receive")))
    if settings.web.web_enabled:
        specs.append(ChildSpec("web", (*CLI, "web")))
    return specs


def up(
    no_train: Annotated[
        bool,
        typer.Option(
            "--no-train",
            help="Do not train a first model even when none "
            "is active and labelled data is configured.",
        ),
    ] = False,
    stop_timeout: Annotated[
        float, typer.Option(help="Seconds to let in-flight batches finish on shutdown.")
    ] = 60.0,
) -> None:
    """Run the whole service on this host: watcher, screening worker, training worker,
    scheduler and, with CXR_RECEIVE_ENABLED, the DICOM receiver and, with CXR_WEB_ENABLED,
    the web pages, with one combined log.
    A child that exits is restarted. Ctrl-C or SIGTERM stops everything cleanly.

    On the embedded defaults (SQLite database and broker under `./var`, folders under the
    working directory) nothing else needs to be installed. The database schema is
    created or upgraded first. With no active model, the bundled default model is put in
    service (it needs the VGG16 ImageNet base weights: CXR_BASE_WEIGHTS); failing that,
    one is trained first when CXR_DATA_DIR is set.
    """
    settings = settings_or_fail()
    for folder in (
        settings.storage.inbox,
        settings.storage.archive,
        settings.storage.quarantine,
        settings.storage.model_dir,
        settings.storage.var_dir,
    ):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"cannot create {folder}: {exc.strerror}") from None
    active = _prepare_database(settings)
    try:
        prepare_embedded_broker(settings)
    except (OSError, OperationalError) as exc:
        raise CommandError(
            f"cannot open the embedded broker {redacted(settings.storage.broker_url)}: {exc}; "
            "check "
            f"that {settings.storage.var_dir} is writable, or set CXR_BROKER_URL to a Redis URL"
        ) from None
    if active is None:
        active = _bundled_model(settings)
    if active is None and not no_train:
        _first_model(settings)
        active = _prepare_database(settings)
    typer.echo(
        "\n".join(
            [
                "cxr-screen is starting.",
                f"  drop scans (DICOM, JPEG, PNG) into: {settings.storage.inbox.resolve()}",
                f"  results:  cxr-screen results   (or SQL on the view: {RESULTS_SQL})",
                f"  database: {redacted(settings.storage.database_url)}",
                f"  model:    {active or 'none yet: scans wait in the queue'}",
                *(
                    [
                        f"  DICOM:    AE {settings.pacs.dicom_ae_title} on "
                        f"{settings.pacs.dicom_bind_address}:{settings.pacs.dicom_port}"
                    ]
                    if settings.pacs.receive_enabled
                    else []
                ),
                *(
                    [f"  web:      http://{settings.web.web_host}:{settings.web.web_port}/"]
                    if settings.web.web_enabled
                    else []
                ),
                "  stop:     Ctrl-C",
            ]
        )
    )
    supervisor = Supervisor(children(settings))

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        supervisor.request_stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    supervisor.start()
    supervisor.run()
    codes = supervisor.stop(timeout=stop_timeout)
    typer.echo(f"cxr-screen stopped ({', '.join(f'{k}: {v}' for k, v in codes.items())}).")
