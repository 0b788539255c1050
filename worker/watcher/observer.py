"""The watch loop: inbox events and walks -> complete files -> intake -> batches."""

from __future__ import annotations

import logging
import os
import queue
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from worker.watcher.batcher import Batcher
from worker.watcher.intake import Folders, Intake, NotAFile, Outcome
from worker.watcher.names import ignored_reason, is_hidden_dir, is_text, resolves_inside
from worker.watcher.stability import Candidate, PendingFiles, Signature

log = logging.getLogger(__name__)

# Only what tells us a file appeared, changed, finished or left: our own reads (open,
# close-nowrite) would otherwise come back to us as events.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
MAX_EVENTS_PER_PASS = 5000
MAX_SLEEP_S = 1.0
MAX_RETRY_DELAY_S = 300.0


class WatcherError(Exception):
    """The watcher cannot go on (the inbox vanished); the service manager restarts it."""


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """How the inbox is watched."""

    stable_seconds: float
    polling: bool = False
    poll_interval_s: int = 1
    rescan_interval_s: float = 60.0


# (event type, is a folder, source path, destination path); None asks the loop to stop.
RawEvent = tuple[str, bool, str, str] | None


class _Forward(FileSystemEventHandler):
    """Runs on watchdog's thread: hands events to the loop and does nothing else."""

    def __init__(self, events: queue.SimpleQueue[RawEvent]) -> None:
        self._events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_synthetic:
            # watchdog's own walk of a folder moved in; the loop walks it itself, and
            # knows that its files are complete (these would say merely "created").
            return
        self._events.put(
            (
                event.event_type,
                event.is_directory,
                os.fsdecode(event.src_path),
                os.fsdecode(event.dest_path),
            )
        )


class Watcher:
    """Watches the inbox and takes each complete file exactly once.

    One thread does the work (watchdog's thread only queues events), so the pending
    files, the batch and the database session never need a lock. On start it walks the
    inbox for files that arrived while it was down, and it walks again every
    `rescan_interval_s` in case an event was lost (inotify queue overflow, a share).
    """

    def __init__(
        self,
        *,
        folders: Folders,
        intake: Intake,
        batcher: Batcher,
        options: WatchOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folders = folders
        self.intake = intake
        self.batcher = batcher
        self.options = options
        self._clock = clock
        self._inbox_real = os.path.realpath(folders.inbox)
        self.pending = PendingFiles(stable_seconds=options.stable_seconds, clock=clock)
        self._events: queue.SimpleQueue[RawEvent] = queue.SimpleQueue()
        self._stopping = False
        self._failures: Counter[Path] = Counter()
        self.counts: Counter[Outcome] = Counter()
        self.mode = "polling" if options.polling else "inotify"

    def request_stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler: SimpleQueue.put is reentrant)."""
        self._stopping = True
        self._events.put(None)

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Watch until `request_stop`; send what is waiting before returning."""
        observer = self._start_observer()
        try:
            self.rescan()
            log.info(
                "watching %s (%s, recursive): complete after %g s unchanged or on close/rename, "
                "batches of %d or every %d ms; %d files found at start",
                self.folders.inbox,
                self.mode,
                self.options.stable_seconds,
                self.batcher.batch_size,
                round(self.batcher.wait_seconds * 1000),
                len(self.pending),
            )
            if on_ready is not None:
                on_ready()
            next_rescan = self._clock() + self.options.rescan_interval_s
            while not self._stopping:
                if not all(emitter.is_alive() for emitter in observer.emitters):
                    raise WatcherError(
                        f"the inbox {self.folders.inbox} can no longer be watched (deleted or "
                        "unmounted?); restore it and start the watcher again"
                    )
                self._drain(self._sleep_until(next_rescan))
                self._take_ready()
                self.batcher.flush()
                if self._clock() >= next_rescan:
                    self.rescan()
                    next_rescan = self._clock() + self.options.rescan_interval_s
        finally:
            observer.stop()
            observer.join(timeout=5)
            self.batcher.flush(final=True)
            log.info(
                "watcher stopped: %s; %d tasks sent",
                ", ".join(f"{n} {o.value}" for o, n in sorted(self.counts.items())) or "no files",
                self.batcher.tasks_sent,
            )

    # --- watching ----------------------------------------------------------------------

    def _start_observer(self) -> BaseObserver:
        observer = self._make_observer(polling=self.options.polling)
        try:
            observer.start()
        except OSError as exc:
            if self.options.polling:
                raise
            # inotify watches are a per-user kernel budget (fs.inotify.max_user_watches);
            # polling is slower but works everywhere.
            log.warning(
                "inotify unavailable for %s (%s): polling the inbox instead; raise "
                "fs.inotify.max_user_watches or set CXR_WATCH_POLLING=true",
                self.folders.inbox,
                exc,
            )
            self.mode = "polling"
            observer = self._make_observer(polling=True)
            observer.start()
        return observer

    def _make_observer(self, *, polling: bool) -> BaseObserver:
        observer: BaseObserver
        if polling:
            # lstat, not stat: a symlinked folder is listed, never walked into.
            observer = PollingObserverVFS(
                stat=os.lstat, listdir=os.scandir, polling_interval=self.options.poll_interval_s
            )
        elif sys.platform.startswith("linux"):
            from watchdog.observers.inotify import InotifyObserver

            # Full events: a rename into the inbox from outside arrives as a move (the file
            # is complete), not as a creation (which could still be written to).
            observer = InotifyObserver(generate_full_events=True)
        else:
            from watchdog.observers import Observer

            observer = Observer()
        observer.schedule(
            _Forward(self._events),
            str(self.folders.inbox),
            recursive=True,
            event_filter=WATCHED_EVENTS,
        )
        return observer

    def _sleep_until(self, next_rescan: float) -> float:
        now = self._clock()
        deadlines = [next_rescan, now + MAX_SLEEP_S]
        deadlines += [
            d for d in (self.pending.next_due(), self.batcher.next_due()) if d is not None
        ]
        return max(0.0, min(deadlines) - now)

    def _drain(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        for _ in range(MAX_EVENTS_PER_PASS):
            if event is not None:
                self._apply(*event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _apply(self, kind: str, is_directory: bool, source: str, destination: str) -> None:
        if is_directory:
            if kind == EVENT_TYPE_CREATED:
                self._observe_tree(Path(source), complete=False)
            elif kind == EVENT_TYPE_MOVED:
                if source:
                    self.pending.forget_under(Path(source))
                if destination:
                    self._observe_tree(Path(destination), complete=True)
            elif kind == EVENT_TYPE_DELETED:
                self.pending.forget_under(Path(source))
            return
        if kind in (EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED):
            self._observe(Path(source), complete=False)
        elif kind == EVENT_TYPE_CLOSED:
            self._observe(Path(source), complete=True)
        elif kind == EVENT_TYPE_MOVED:
            if source:
                self.pending.forget(Path(source))
            if destination:
                self._observe(Path(destination), complete=True)
        elif kind == EVENT_TYPE_DELETED:
            self.pending.forget(Path(source))

    def _candidate(self, path: Path) -> bool:
        if not path.is_relative_to(self.folders.inbox):
            return False
        reason = ignored_reason(path.relative_to(self.folders.inbox))
        if reason is not None:
            log.debug("ignoring %s: %s", self.folders.name(path), reason)
            return False
        return True

    def _observe(self, path: Path, *, complete: bool) -> None:
        if self._candidate(path):
            self.pending.observe(path, complete=complete)

    def _observe_tree(self, folder: Path, *, complete: bool) -> None:
        # A folder created or moved in: its files may predate our watch on it.
        for path, _ in self._walk(folder):
            self._observe(path, complete=complete)

    def rescan(self) -> None:
        """Walk the inbox: track every file not taken yet (start-up, and lost events)."""
        found: list[Path] = []
        for path, status in self._walk(self.folders.inbox):
            found.append(path)
            if self._candidate(path):
                self.pending.seen(path, status)
        self.pending.keep_taken_only(found)

    def _walk(self, folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
        """Files and symlinks below `folder`; symlinked and hidden folders not entered."""
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            log.warning("cannot list %s: %s; its files wait for the next walk", folder, exc)
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not is_hidden_dir(entry.name):
                        yield from self._walk(Path(entry.path))
                    continue
                yield Path(entry.path), entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone between the listing and the stat

    # --- taking ------------------------------------------------------------------------

    def _take_ready(self) -> None:
        for candidate in self.pending.ready():
            if self._stopping:
                return  # what is left is still in the inbox: the next start takes it
            self._take(candidate)
            self.batcher.flush()  # a batch that just filled goes out at once

    def _take(self, candidate: Candidate) -> None:
        path = candidate.path
        name = self.folders.name(path)
        signature = Signature.of(candidate.status)
        if candidate.is_symlink or not candidate.is_regular:
            self._refuse_special(candidate, name)
            self.pending.mark_taken(path, signature)
            return
        if not resolves_inside(path, self._inbox_real):
            log.warning("not taking %s: its folder is a symlink to outside the inbox", name)
            self.pending.mark_taken(path, signature)
            return
        try:
            if not is_text(path):
                self.pending.forget(path)
                path = self.intake.rename_to_text(path)
                name = self.folders.name(path)
            result = self.intake.take(path)
        except FileNotFoundError:
            log.info("%s disappeared before it was taken", name)
            self._failures.pop(path, None)
            self.pending.forget(path)
            return
        except NotAFile:
            self.pending.observe(path)  # replaced meanwhile: judge the new thing next time
            return
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the watcher
            self._failed(path, name, exc)
            return
        self._failures.pop(path, None)
        self.counts[result.outcome] += 1
        if result.outcome is Outcome.CHANGED:
            log.debug("%s changed while it was read: waiting until it settles", name)
            self.pending.observe(path)
            return
        self.pending.mark_taken(path, result.signature)
        if result.outcome is Outcome.ACCEPTED and result.scan_id is not None:
            self.batcher.add(result.scan_id)

    def _refuse_special(self, candidate: Candidate, name: str) -> None:
        if not candidate.is_symlink:
            log.info("ignoring %s: not a regular file", name)
        elif resolves_inside(candidate.path, self._inbox_real):
            log.info("ignoring %s: a symlink (its target in the inbox is taken itself)", name)
        else:
            log.warning("not following %s: a symlink pointing outside the inbox", name)

    def _failed(self, path: Path, name: str, exc: Exception) -> None:
        self._failures[path] += 1
        attempt = self._failures[path]
        delay = min(MAX_RETRY_DELAY_S, 2.0 ** (attempt - 1))
        log.error(
            "could not take %s (attempt %d): %s: %s; trying again in %.0f s",
            name,
            attempt,
            type(exc).__name__,
            exc,
            delay,
            exc_info=attempt == 1,
        )
        self.pending.retry_later(path, delay)
