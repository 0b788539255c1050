"""Failed sign-ins counted per client address and name: past the limit, refused unchecked."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

# Ten wrong passwords in five minutes is more than a person types; each check costs a
# 16 MiB scrypt, so guessing past it is refused without one.
MAX_FAILURES = 10
WINDOW_S = 300.0


class SignInThrottle:
    """Failures in a sliding window per (client address, name); thread-safe (sign-ins run
    in the server's thread pool). Per name as well as per address: behind a proxy every
    client has the proxy's address, and one person's typing must not lock out the rest.
    """

    def __init__(
        self,
        *,
        limit: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def allowed(self, client: str, name: str) -> bool:
        """Whether a sign-in from `client` as `name` may be checked now."""
        with self._lock:
            return self._count((client, name)) < self._limit

    def failed(self, client: str, name: str) -> None:
        """Count a refused sign-in."""
        with self._lock:
            self._count((client, name))
            self._failures.setdefault((client, name), deque()).append(self._clock())

    def succeeded(self, client: str, name: str) -> None:
        """Forget the failures of a sign-in that went through."""
        with self._lock:
            self._failures.pop((client, name), None)

    def _count(self, key: tuple[str, str]) -> int:
        """Failures of `key` within the window; a key with none left is dropped, so only
        recent failures take memory."""
        stamps = self._failures.get(key)
        if stamps is None:
            return 0
        oldest = self._clock() - self._window_s
        while stamps and stamps[0] < oldest:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
        return len(stamps)
