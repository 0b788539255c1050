"""Files seen but not yet taken: a file is complete when it stops changing, or says so."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Signature:
    """What changes when a file is written to or replaced: size, mtime, inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, status: os.stat_result) -> Signature:
        """The signature of a stat (or lstat, or fstat) result."""
        return cls(status.st_size, status.st_mtime_ns, status.st_ino)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file ready to be taken, with the lstat that found it ready."""

    path: Path
    status: os.stat_result

    @property
    def is_regular(self) -> bool:
        """A plain file (not a symlink, folder, fifo or socket)."""
        return stat.S_ISREG(self.status.st_mode)

    @property
    def is_symlink(self) -> bool:
        """A symbolic link: its target is judged, never followed blindly."""
        return stat.S_ISLNK(self.status.st_mode)


@dataclass(slots=True)
class _Pending:
    signature: Signature | None
    since: float  # when a change was last seen (our clock, not the file's mtime)
    due: float  # when to look at the file again
    complete: bool  # the writer said it is done: close-write, or renamed into place


def _lstat(path: Path) -> os.stat_result | None:
    # Gone, or out of reach (a folder without search permission, a name too long): either
    # way nothing to take now; the next event or walk brings it back if it becomes usable.
    try:
        return path.lstat()
    except OSError:
        return None


class PendingFiles:
    """Tracks files until they are complete, then hands each version over once.

    A file is complete when its size, mtime and inode have been unchanged for
    `stable_seconds` by our own clock (the file's mtime may come from another host's
    clock on a network share, so it is compared, never trusted as a time), or at once
    after a close-write or a rename into place, unless a later change arrives first.
    A version already taken (same signature) is not handed over again, so repeated
    events and rescans cost a stat, not a hash.
    """

    def __init__(
        self, *, stable_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stable_seconds = stable_seconds
        self._clock = clock
        self._pending: dict[Path, _Pending] = {}
        self._taken: dict[Path, Signature] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def observe(self, path: Path, *, complete: bool = False) -> None:
        """Something happened to `path`: written to, created, closed or renamed into place.

        Args:
            path: The file.
            complete: The writer finished (close-write, rename into place): take it
                without waiting. A later plain change takes this back.
        """
        now = self._clock()
        found = _lstat(path)
        signature = Signature.of(found) if found is not None else None
        entry = self._pending.get(path)
        if entry is None:
            entry = self._pending[path] = _Pending(signature, now, now, complete)
        entry.signature = signature
        if complete:
            entry.complete = True
            entry.due = now
        else:
            entry.complete = False
            entry.since = now
            entry.due = now + self.stable_seconds

    def seen(self, path: Path, status: os.stat_result) -> None:
        """A walk of the inbox found `path`: track it unless this version was taken."""
        if path in self._pending or self._taken.get(path) == Signature.of(status):
            return
        self.observe(path)

    def retry_later(self, path: Path, delay: float) -> None:
        """Look at `path` again in `delay` seconds, without a new stability wait."""
        now = self._clock()
        self._pending[path] = _Pending(None, now, now + delay, complete=True)

    def forget(self, path: Path) -> None:
        """`path` is gone (deleted, moved away): stop tracking it."""
        self._pending.pop(path, None)
        self._taken.pop(path, None)

    def forget_under(self, folder: Path) -> None:
        """A folder is gone: stop tracking everything below it."""
        for table in (self._pending, self._taken):
            for path in [p for p in table if p.is_relative_to(folder)]:
                del table[path]

    def keep_taken_only(self, existing: Iterable[Path]) -> None:
        """Drop memories of taken files that no longer exist (missed delete events)."""
        alive = set(existing)
        for path in [p for p in self._taken if p not in alive]:
            del self._taken[path]

    def mark_taken(self, path: Path, signature: Signature) -> None:
        """This version of `path` was handled; do not hand it over again."""
        self._pending.pop(path, None)
        self._taken[path] = signature

    def next_due(self) -> float | None:
        """The clock time of the next look, or None when nothing is pending."""
        return min((e.due for e in self._pending.values()), default=None)

    def ready(self) -> list[Candidate]:
        """Look at every file that is due; return those complete, oldest change first."""
        now = self._clock()
        ready: list[tuple[float, Candidate]] = []
        for path, entry in list(self._pending.items()):
            if entry.due > now:
                continue
            found = _lstat(path)
            if found is None:
                del self._pending[path]
                continue
            signature = Signature.of(found)
            if self._taken.get(path) == signature:
                del self._pending[path]
                continue
            stable = entry.signature == signature and now - entry.since >= self.stable_seconds
            if entry.complete or stable:
                del self._pending[path]
                ready.append((entry.since, Candidate(path, found)))
                continue
            if entry.signature != signature:
                entry.signature = signature
                entry.since = now
            entry.due = entry.since + self.stable_seconds
        return [candidate for _, candidate in sorted(ready, key=lambda item: item[0])]
