"""The whole exception tree of converge, and the exit code each class means.

::

    ConvergeError                exit 1
    ├── ManifestError            bad input: every problem with file, line, key; never retried
    ├── ApiError                 connection, method, path, status, server message
    │   ├── TransientApiError    5xx, 429, timeouts, dropped connections: retried, carries retry_after
    │   └── PermanentApiError    other 4xx, unusable answers: never retried
    │       └── AuthError        credentials refused: never retried (Era bans an IP after 5)
    ├── StateError               the state store cannot be opened, read or written
    ├── StalePlanError           exit 3: a saved plan no longer matches live state
    └── GuardError               exit 4: preventDestroy, --max-deletes
        └── LockHeldError        exit 4: another run holds the state lock

A partial apply is not an exception: it is a report whose failed entries make exit 5.
Every message here is shown to users as is, so none may carry a secret: clients redact
server messages before raising (see ``controller.redaction``).
"""

from __future__ import annotations

import dataclasses


class ConvergeError(Exception):
    """Base of every error converge reports to a user."""

    exit_code: int = 1


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong with the input, pointing at where it is."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ManifestError(ConvergeError):
    """The manifests are invalid; carries every problem found, sorted."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(sorted(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class ApiError(ConvergeError):
    """A live API call failed. The message names the connection, the call and the server's words."""

    def __init__(
        self,
        message: str,
        *,
        connection: str = "",
        method: str = "",
        path: str = "",
        status: int | None = None,
    ) -> None:
        self.connection = connection
        self.method = method
        self.path = path
        self.status = status
        self.server_message = message
        call = f"{method} {path}".strip()
        parts = [p for p in (connection, call) if p]
        prefix = f"{': '.join(parts)}: " if parts else ""
        status_text = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{status_text}{message}")


class TransientApiError(ApiError):
    """Worth retrying: the server was busy, unreachable or timed out.

    ``maybe_applied`` is true when the request may have been carried out before the answer
    was lost (a read timeout or a dropped connection after sending): a non-idempotent call
    must then be checked by reading before it is repeated.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        maybe_applied: bool = False,
        **where: object,
    ) -> None:
        super().__init__(message, **where)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


class PermanentApiError(ApiError):
    """Repeating the call would give the same answer."""


class AuthError(PermanentApiError):
    """The credentials were refused. Never retried: Era bans an IP after 5 failed logins."""


class StateError(ConvergeError):
    """The state store cannot be opened, read or written."""


class StalePlanError(ConvergeError):
    """A saved plan touches objects whose live fingerprint changed since planning."""

    exit_code = 3

    def __init__(self, stale: list[str]) -> None:
        self.stale = tuple(stale)
        listed = ", ".join(self.stale)
        super().__init__(
            f"the saved plan is stale: {len(self.stale)} object(s) changed since it was made "
            f"({listed}); nothing was applied. Run `converge plan` again."
        )


class GuardError(ConvergeError):
    """A safety guard refused the plan: preventDestroy, --max-deletes."""

    exit_code = 4


class LockHeldError(GuardError):
    """Another run holds the state lock."""

    def __init__(self, holder: str, since: str) -> None:
        self.holder = holder
        self.since = since
        super().__init__(f"the state is locked by {holder} since {since}")
