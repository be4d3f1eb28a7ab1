"""A thread-safe token bucket: at most ``rate`` requests per second per session.

Used by ``controller.clients.http`` before every request it sends (retries and logins
included), so a Connection's ``rateLimit`` holds whatever the callers do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class TokenBucket:
    """Reserve-then-sleep: each caller takes a token (the count may go negative) under the
    lock and sleeps outside it, so waiting callers are served in arrival order and the
    lock is never held across a sleep."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        # A burst of one second's worth (at least one request) keeps a warm start cheap
        # without ever exceeding the rate over any second.
        self._capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for one token; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
