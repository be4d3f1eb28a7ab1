"""Counts of what a session sent: for the benchmark report and ``-v`` summaries.

Owned by each ``controller.clients.http.HttpSession`` (``session.stats``) and updated from
many threads at once, hence the lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class RequestStats:
    """Thread-safe counts for the benchmark and ``-v``: requests sent (retries and logins
    included), retries, logins, per method."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: Counter[str] = Counter()
        self._retried: Counter[str] = Counter()
        self._logins = 0

    def count_sent(self, method: str) -> None:
        with self._lock:
            self._sent[method] += 1

    def count_retry(self, method: str) -> None:
        with self._lock:
            self._retried[method] += 1

    def count_login(self) -> None:
        with self._lock:
            self._logins += 1

    @property
    def requests(self) -> int:
        with self._lock:
            return sum(self._sent.values())

    @property
    def retries(self) -> int:
        with self._lock:
            return sum(self._retried.values())

    @property
    def logins(self) -> int:
        with self._lock:
            return self._logins

    def by_method(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._sent.items()))

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self._sent.values()),
                "retries": sum(self._retried.values()),
                "logins": self._logins,
                "by_method": dict(sorted(self._sent.items())),
                "retries_by_method": dict(sorted(self._retried.items())),
            }
