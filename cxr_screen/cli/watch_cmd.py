"""`cxr-screen watch`: record and queue every scan dropped into the inbox, once."""

from __future__ import annotations

import signal
from types import FrameType

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from cxr_screen.cli.common import CommandError, database_error, engine_for, settings_or_fail
from db.models import Scan
from db.session import make_session_factory
from worker.celery_app import create_app
from worker.logs import configure_logging
from worker.watcher.observer import Watcher, WatcherError
from worker.watcher.service import FolderSetupError, build_watcher


def _stop_on_signals(watcher: Watcher) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        watcher.request_stop()
        # A second Ctrl-C or SIGTERM stops at once, without the final send.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def watch() -> None:
    """Watch the inbox (CXR_INBOX, with its sub-folders) and queue each new scan once.

    A file is taken when it is complete: closed by its writer, renamed into place, or
    unchanged for CXR_STABLE_SECONDS. Names like `*.part`, `*.tmp`, `*~` and hidden
    files wait until they are renamed; symlinks are not followed. Each file is hashed:
    new content becomes a queued scan (sent in batches of CXR_BATCH_SIZE, or after
    CXR_BATCH_WAIT_MS), known content is a duplicate kept under
    `archive/duplicates/`, and a file over CXR_MAX_FILE_MB is rejected into the
    quarantine with its reason. Files that arrived while the watcher was down are
    taken on start. Set CXR_WATCH_POLLING=true for network shares. Stop with Ctrl-C
    or SIGTERM.
    """
    settings = settings_or_fail()
    configure_logging(settings.log_level)
    engine = engine_for(settings)
    try:
        # Fail now, with the fix in the message, rather than on the first file.
        with engine.connect() as connection:
            connection.execute(select(Scan.id).limit(1))
        watcher = build_watcher(
            settings,
            session_factory=make_session_factory(engine),
            app=create_app(settings, include=()),
        )
        _stop_on_signals(watcher)
        watcher.run()
    except (OperationalError, ProgrammingError) as exc:
        raise database_error(exc, settings.storage.database_url) from None
    except (FolderSetupError, WatcherError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()
