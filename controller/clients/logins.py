"""One login per session, shared by every thread that uses it.

Used by ``controller.clients.http.HttpSession``. Why a class of its own: the rules are
subtle and each one guards a real failure —

1. login lazily, under a lock, so N threads starting together make one login, not N
   (Era allows 10 sessions per user);
2. after an expired session, log in again only if nobody has since the refused request
   was sent (a generation counter), so N threads refused together make one new login;
3. a refused login (401/403) is remembered and never repeated: Era bans an IP after five.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from controller import errors


class SharedLogin:
    def __init__(self, login: Callable[[], Mapping[str, str]]) -> None:
        self._login = login
        self._lock = threading.Lock()
        self._headers: Mapping[str, str] | None = None
        self._generation = 0
        self._refused: errors.AuthError | None = None

    def headers(self) -> tuple[Mapping[str, str], int]:
        """The auth headers to send and their generation (logging in if need be)."""
        with self._lock:
            if self._headers is None:
                self._login_locked()
            assert self._headers is not None
            return self._headers, self._generation

    def renew(self, seen_generation: int) -> None:
        """The session of ``seen_generation`` was refused: replace it, unless done already."""
        with self._lock:
            if self._generation == seen_generation:
                self._login_locked()

    def take(self) -> Mapping[str, str] | None:
        """Forget the current login and return its headers (for a logout)."""
        with self._lock:
            headers, self._headers = self._headers, None
            return headers

    def _login_locked(self) -> None:
        if self._refused is not None:
            raise _copy(self._refused)
        try:
            headers = dict(self._login())
        except errors.AuthError as exc:
            self._refused = exc
            raise
        except errors.PermanentApiError as exc:
            if exc.status not in (401, 403):
                raise
            self._refused = _copy(exc)
            raise self._refused from exc
        self._headers = headers
        self._generation += 1


def _copy(error: errors.ApiError) -> errors.AuthError:
    # A fresh instance per raise: one exception object raised in many threads would
    # share (and grow) a single traceback.
    return errors.AuthError(
        error.server_message,
        connection=error.connection,
        method=error.method,
        path=error.path,
        status=error.status,
    )
