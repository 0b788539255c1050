"""Scan ids into screening tasks: a full batch at once, a partial one after a short wait."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

# Send one batch; return the ids the broker accepted (a prefix, empty when it is down).
SendBatch = Callable[[Sequence[int]], Sequence[int]]
MAX_BACKOFF_S = 30.0


class Batcher:
    """Collects the ids of recorded scans and sends them in batches.

    A batch goes out as soon as it holds `batch_size` ids, or when its oldest id has
    waited `wait_seconds`: a burst of files becomes full batches, a lone file is not
    kept waiting. Every id is already a committed `queued` row, so ids the broker
    refuses are retried here after a back-off, and ids that never make it (the
    watcher stops, or the backlog overflows) are sent by the reconcile task.
    """

    def __init__(
        self,
        send: SendBatch,
        *,
        batch_size: int,
        wait_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_backlog: int = 10_000,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self._send = send
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self._clock = clock
        self.max_backlog = max_backlog
        self._waiting: deque[tuple[int, float]] = deque()
        self._retry_at: float | None = None
        self._failures = 0
        self.tasks_sent = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, scan_id: int) -> None:
        """Queue one recorded scan for sending."""
        self._waiting.append((scan_id, self._clock()))
        if len(self._waiting) > self.max_backlog:
            dropped = len(self._waiting) - self.max_backlog
            for _ in range(dropped):
                self._waiting.popleft()
            log.warning(
                "broker backlog over %d scans: %d left queued for the reconcile task",
                self.max_backlog,
                dropped,
            )

    def next_due(self) -> float | None:
        """When `flush` next has something to do (clock time), or None."""
        if not self._waiting:
            return None
        if self._retry_at is not None:
            return self._retry_at
        if len(self._waiting) >= self.batch_size:
            return self._clock()
        return self._waiting[0][1] + self.wait_seconds

    def flush(self, *, final: bool = False) -> None:
        """Send every batch that is due; with `final`, everything, once (shutting down)."""
        now = self._clock()
        if not final and self._retry_at is not None and now < self._retry_at:
            return
        while self._waiting:
            full = len(self._waiting) >= self.batch_size
            overdue = now - self._waiting[0][1] >= self.wait_seconds
            if not (full or overdue or final or self._retry_at is not None):
                return
            batch = [scan_id for scan_id, _ in list(self._waiting)[: self.batch_size]]
            sent = set(self._send(batch))
            # The broker takes a prefix of the batch (it stops at the first refusal).
            while self._waiting and self._waiting[0][0] in sent:
                self._waiting.popleft()
            if len(sent) < len(batch):
                self._back_off(now, final=final)
                return
            self.tasks_sent += 1
            self._failures = 0
            self._retry_at = None

    def _back_off(self, now: float, *, final: bool) -> None:
        self._failures += 1
        if final:
            log.warning(
                "stopping with %d scans not sent: they stay queued for the reconcile task",
                len(self._waiting),
            )
            return
        delay = min(MAX_BACKOFF_S, 2.0 ** (self._failures - 1))
        self._retry_at = now + delay
        log.warning(
            "could not send %d scans to the screening queue; retrying in %.0f s "
            "(the rows are queued, and the reconcile task sends them too)",
            len(self._waiting),
            delay,
        )
