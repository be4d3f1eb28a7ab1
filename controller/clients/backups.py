"""The one protocol the three backup products share, and the live backup it returns.

Implemented by ``element.py``, ``vcda.py`` and ``commvault.py``; read by fetching (to
build a policy's live view), by ``controller.policies`` (due-ness and retention) and by
applying (trigger, poll, expire). The planner never knows which product it talks to.
Below the protocol: the few ways of reading answers the three products share, and
``open_backup_api``, the one factory callers use.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from controller import errors
from controller.manifests import Api, BackupPolicy

if TYPE_CHECKING:  # annotations only: policies imports this module and stays httpx-free
    from controller.clients.http import HttpResponse, HttpSession, HttpSettings


class BackupState(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RUNNING = "running"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LiveBackup:
    id: str  # dump id / backup id or task id / job id
    state: BackupState
    created: datetime | None  # UTC; when it was made (success) or started
    finished: datetime | None
    message: str = ""  # the server's own words for a failure
    progress: int | None = None

    @property
    def done(self) -> bool:
        return self.state is not BackupState.RUNNING


class BackupApi(Protocol):
    def list_backups(self, policy: BackupPolicy) -> list[LiveBackup]:
        """The backups that count for ``policy``, running ones included."""
        ...

    def trigger(self, policy: BackupPolicy) -> str:
        """Start one backup (never two after a lost answer); returns the handle to poll."""
        ...

    def poll(self, policy: BackupPolicy, handle: str) -> LiveBackup: ...

    def delete(self, policy: BackupPolicy, backup_id: str) -> None: ...

    def close(self) -> None: ...


# -- reading the products' answers, shared by the three clients ---------------------------


def epoch(value: Any, *, unit: float) -> datetime | None:
    """An epoch timestamp (``unit`` 1 for seconds, 1000 for milliseconds) as UTC.

    Accepts numbers and digit strings, including vcda's ``"1464261608370L"``; 0, negative
    values (vcda's ``-1`` "not yet") and anything unreadable mean no time.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("Ll"))
        except ValueError:
            return None
    if not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value / unit, UTC)


def server_text(value: Any) -> str:
    """A server's message field as one line, whatever shape it came in (text, list, object)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "; ".join(t for t in (server_text(item) for item in value) if t)
    if isinstance(value, dict):
        for key in ("message", "msg", "errorMessage", "errLogMessage", "description", "detail"):
            if value.get(key):
                return server_text(value[key])
        return ", ".join(f"{k}={server_text(v)}" for k, v in sorted(value.items()))
    return " ".join(str(value).split())


def json_of(response: HttpResponse) -> Any:
    """The answer's JSON, or None for an empty body (a tolerated variant, e.g. an empty job)."""
    return response.json() if response.body.strip() else None


def bad_answer(
    session: HttpSession,
    response: HttpResponse,
    message: str,
    *,
    error: type[errors.PermanentApiError] = errors.PermanentApiError,
) -> errors.PermanentApiError:
    """An answer we cannot use, as an error that names the connection and the call.

    For answers the session accepted (2xx) that still say "failed" or lack what we need
    (``error=AuthError`` for a login that answered without a token); status errors are
    the session's job.
    """
    return error(
        session.redact(message),
        connection=session.connection,
        method=response.method,
        path=response.path,
        status=response.status,
    )


def open_backup_api(
    api: Api,
    settings: HttpSettings,
    auth: Mapping[str, str],
    *,
    operation_id: str | None = None,
    **session_kwargs: Any,
) -> BackupApi:
    """The client for a Connection's ``api``: what fetching and applying call.

    ``auth`` is the Connection's auth block (keys per manifests.md); ``operation_id`` the
    run's id (vcda sends it as ``operationID``); ``session_kwargs`` go to ``HttpSession``
    (``transport`` for tests, ``sleep``, ``clock``, ``secrets`` ...).
    """
    # Imported here: the product modules import this one for the protocol and helpers.
    from controller.clients import commvault, element, vcda

    factories: dict[Api, Callable[..., BackupApi]] = {
        Api.ELEMENT: element.ElementBackupApi,
        Api.VCDA: vcda.VcdaBackupApi,
        Api.COMMVAULT: commvault.CommvaultBackupApi,
    }
    if api not in factories:
        raise ValueError(f"{settings.connection}: api {api!s} has no backups")
    return factories[api](settings, auth, operation_id=operation_id, **session_kwargs)
