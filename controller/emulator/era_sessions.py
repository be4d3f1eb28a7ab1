"""Era's session rules: tokens, idle expiry, the per-user session limit and the login ban.

Used by ``era.py`` only. Sessions live in memory on purpose: a restarted Era forgets its
sessions too, and the controller must then log in again after a 401.

The rules (apis.md §1):

- A session expires after ``idle_timeout`` seconds without a request (default 600).
- At most ``max_per_user`` sessions per user (default 10). A new login beyond that evicts
  the user's least recently used session, which then answers 401: a client that logs in
  per request shows up as a storm of logins in ``stats`` and of 401s, not as a hard error.
- ``ban_after`` failed logins (default 5) from one client IP within ``ban_window`` seconds
  (default 180) ban that IP for ``ban_seconds`` (default 180): every login from it is then
  refused with 403, even with good credentials.
"""

from __future__ import annotations

import collections
import dataclasses
import secrets
import threading
from collections.abc import Callable

__all__ = ["Session", "SessionTable"]


@dataclasses.dataclass(slots=True)
class Session:
    token: str
    user: str  # "domain/login"
    created: float
    last_used: float


class SessionTable:
    """Thread-safe session and ban bookkeeping on an injectable clock."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        idle_timeout: float = 600.0,
        max_per_user: int = 10,
        ban_after: int = 5,
        ban_window: float = 180.0,
        ban_seconds: float = 180.0,
    ) -> None:
        self._clock = clock
        self.idle_timeout = idle_timeout
        self.max_per_user = max_per_user
        self.ban_after = ban_after
        self.ban_window = ban_window
        self.ban_seconds = ban_seconds
        self._lock = threading.Lock()
        # Insertion order doubles as recency: a used session is moved to the end.
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._failures: dict[str, collections.deque[float]] = {}
        self._banned_until: dict[str, float] = {}

    def banned(self, client: str) -> bool:
        with self._lock:
            until = self._banned_until.get(client)
            if until is None:
                return False
            if self._clock() >= until:
                del self._banned_until[client]
                return False
            return True

    def record_failure(self, client: str) -> bool:
        """Count a failed login; True when this failure bans the client."""
        with self._lock:
            now = self._clock()
            failures = self._failures.setdefault(client, collections.deque())
            failures.append(now)
            while failures and failures[0] <= now - self.ban_window:
                failures.popleft()
            if len(failures) >= self.ban_after:
                failures.clear()
                self._banned_until[client] = now + self.ban_seconds
                return True
            return False

    def open(self, user: str) -> str:
        """A new session for ``user``; evicts the user's least recently used past the limit."""
        token = secrets.token_hex(24)
        with self._lock:
            now = self._clock()
            self._drop_idle(now)
            own = [s.token for s in self._sessions.values() if s.user == user]
            for stale in own[: max(0, len(own) - self.max_per_user + 1)]:
                del self._sessions[stale]
            self._sessions[token] = Session(token, user, now, now)
        return token

    def touch(self, token: str) -> Session | None:
        """The live session for ``token``, marked used now; None when unknown or expired."""
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            now = self._clock()
            if now - session.last_used > self.idle_timeout:
                del self._sessions[token]
                return None
            session.last_used = now
            self._sessions.move_to_end(token)
            return session

    def close(self, token: str) -> bool:
        with self._lock:
            return self._sessions.pop(token, None) is not None

    def expire_all(self) -> int:
        with self._lock:
            count = len(self._sessions)
            self._sessions.clear()
            return count

    def reset(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._failures.clear()
            self._banned_until.clear()

    def count(self) -> int:
        with self._lock:
            self._drop_idle(self._clock())
            return len(self._sessions)

    def _drop_idle(self, now: float) -> None:
        # Least recently used first, so the scan stops at the first live session.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used <= self.idle_timeout:
                break
            del self._sessions[oldest.token]
