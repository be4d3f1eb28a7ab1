"""VMware Cloud Director Availability appliance backups, as a BackupApi (apis.md §3).

Built by ``backups.open_backup_api`` for ``api: vcda`` connections; called by fetching
(list) and applying (trigger, poll, delete). A trigger answers a *task*; the task's id is
the handle, and a succeeded task names the backup it made. The backup file's password is
a secret sent in the trigger body: it is added to the session's secrets before it is
sent, so no error or log line can carry it even if the server echoes the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from controller.clients import backups, triggering
from controller.clients.backups import BackupState, LiveBackup
from controller.clients.http import HttpResponse, HttpSession, HttpSettings
from controller.errors import AuthError
from controller.manifests import BackupPolicy, VcdaApplianceSource

ACCEPT = "application/vnd.vmware.h4-v4.7+json;charset=UTF-8"
TOKEN_HEADER = "X-VCAV-Auth"
# A handle for a backup found by listing after a lost answer, when its task already ended
# and only the backup itself is left to point at.
BACKUP_HANDLE = "backup:"
_ACTIVE = frozenset({"QUEUED", "RUNNING"})
# Tasks per page when listing running ones; a bound on pages keeps the loop finite.
_PAGE = 100
_MAX_PAGES = 20

# auth.type → the session body's field names (user, password).
_LOGIN_FIELDS = {
    "localUser": ("localUser", "localPassword"),
    "vcdCredentials": ("vcdUser", "vcdPassword"),
    "ssoCredentials": ("username", "password"),
}


class VcdaAuthenticator:
    """``POST /sessions``; the token comes back in the ``X-VCAV-Auth`` response header."""

    def __init__(self, auth: Mapping[str, str]) -> None:
        kind = auth.get("type", "localUser")
        if kind not in _LOGIN_FIELDS:
            raise ValueError(f"vcda auth type {kind!r} is not one of {sorted(_LOGIN_FIELDS)}")
        user_key, password_key = _LOGIN_FIELDS[kind]
        self._body = {
            "type": kind,
            user_key: auth.get("user", ""),
            password_key: auth.get("password", ""),
        }

    def login(self, session: HttpSession) -> Mapping[str, str]:
        # idempotent: a lost login answer leaves at most an unused session; log in again.
        response = session.request(
            "POST", "/sessions", json=self._body, authenticated=False, idempotent=True
        )
        token = response.headers.get(TOKEN_HEADER, "")
        if not token:
            raise backups.bad_answer(
                session, response, f"the answer has no {TOKEN_HEADER} header", error=AuthError
            )
        return {TOKEN_HEADER: token}

    def logout(self, session: HttpSession, headers: Mapping[str, str]) -> None:
        session.request("DELETE", "/sessions", headers=headers, authenticated=False)

    def is_expired(self, response: HttpResponse) -> bool:
        return response.status == 401


def error_message(response: HttpResponse) -> str:
    """ApiError ``{"code", "msg", ...}`` as ``code: msg`` (the stacktrace is never shown)."""
    try:
        body = response.json()
    except Exception:  # by design: a non-JSON error body is shown as text
        return response.snippet(300)
    if not isinstance(body, dict):
        return backups.server_text(body)
    code = backups.server_text(body.get("code"))
    message = backups.server_text(body.get("msg") or body.get("message"))
    return f"{code}: {message}" if code and message else message or code or response.snippet()


def task_to_backup(task: Mapping[str, Any]) -> LiveBackup:
    """A task as the backup it is making (running, failed) or made (succeeded)."""
    state = str(task.get("state") or "").upper()
    started = backups.epoch(task.get("startTime"), unit=1000)
    ended = backups.epoch(task.get("endTime"), unit=1000)
    progress = task.get("progress") if isinstance(task.get("progress"), int) else None
    task_id = str(task.get("id", ""))
    if state in _ACTIVE or (state != "SUCCEEDED" and task.get("endTime") in (-1, "-1")):
        # An unknown state that says "not ended" is still running; any other is final.
        return LiveBackup(
            id=task_id, state=BackupState.RUNNING, created=started, finished=None, progress=progress
        )
    if state == "SUCCEEDED":
        result = task.get("result")
        result = result if isinstance(result, dict) else {}
        return LiveBackup(
            # The backup's own id is what retention and the state record; a result without
            # one still is a success, named by its task.
            id=str(result.get("id") or task_id),
            state=BackupState.SUCCEEDED,
            created=backups.epoch(result.get("generatedOn"), unit=1000) or started,
            finished=ended,
            progress=100,
        )
    error = task.get("error")
    words = backups.server_text(error.get("msg") if isinstance(error, dict) else error)
    return LiveBackup(
        id=task_id,
        state=BackupState.FAILED,
        created=started,
        finished=ended,
        message=words or f"task ended {state or 'without a state'}",
        progress=progress,
    )


def backup_entry(entry: Mapping[str, Any]) -> LiveBackup:
    made = backups.epoch(entry.get("generatedOn"), unit=1000)
    return LiveBackup(
        id=str(entry.get("id", "")), state=BackupState.SUCCEEDED, created=made, finished=made
    )


def is_backup_task(task: Mapping[str, Any]) -> bool:
    """Whether a task may be generating an appliance backup (the appliance runs others too).

    The docs fill ``resultType`` only once a task succeeded, so an active task often says
    nothing of its kind: an untyped task counts as a backup, because mistaking it for one
    only delays a trigger, while missing ours would start a second backup.
    """
    result_type = task.get("resultType")
    if result_type:
        return result_type == "BackupInfo"
    workflow = task.get("workflowInfo")
    kind = workflow.get("type") if isinstance(workflow, dict) else None
    return "backup" in kind.lower() if isinstance(kind, str) and kind else True


class VcdaBackupApi:
    """BackupApi for vcda: backups are listed directly, running ones as their tasks."""

    def __init__(
        self,
        settings: HttpSettings,
        auth: Mapping[str, str],
        *,
        operation_id: str | None = None,
        **session_kwargs: Any,  # passed to HttpSession: transport, sleep, clock, ...
    ) -> None:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if operation_id:
            headers["operationID"] = operation_id  # correlates this run's calls in the logs
        self._session = HttpSession(
            settings,
            authenticator=VcdaAuthenticator(auth),
            secrets=(auth.get("password", ""), *session_kwargs.pop("secrets", ())),
            **session_kwargs,
            headers=headers,
            error_message=error_message,
        )

    def list_backups(self, policy: BackupPolicy) -> list[LiveBackup]:
        # Failed tasks too: without them a policy whose newest attempt failed would look
        # merely overdue, and `drift` could never say `failing` with the server's message.
        return [
            *self._backups(),
            *self._running_tasks(),
            *self._tasks_in("FAILED", keep=BackupState.FAILED),
        ]

    def trigger(self, policy: BackupPolicy) -> str:
        password = _source(policy).password
        self._session.add_secrets(password)
        return triggering.trigger_once(
            start=lambda: self._generate(password),
            listing=lambda: self.list_backups(policy),
            handle_for=_handle_for,
        )

    def poll(self, policy: BackupPolicy, handle: str) -> LiveBackup:
        if handle.startswith(BACKUP_HANDLE):
            backup_id = handle.removeprefix(BACKUP_HANDLE)
            for backup in self._backups():
                if backup.id == backup_id:
                    return backup
            return LiveBackup(
                id=backup_id,
                state=BackupState.FAILED,
                created=None,
                finished=None,
                message="the backup is no longer listed",
            )
        response = self._session.request("GET", f"/tasks/{quote(handle, safe='')}")
        body = response.json()
        if not isinstance(body, dict):
            raise backups.bad_answer(self._session, response, "expected a task object")
        return task_to_backup(body)

    def delete(self, policy: BackupPolicy, backup_id: str) -> None:
        # 404: already gone, e.g. our first DELETE was carried out but its answer lost.
        self._session.request(
            "DELETE", f"/backups/{quote(backup_id, safe='')}", ok=(200, 202, 204, 404)
        )

    def close(self) -> None:
        self._session.close()

    def _generate(self, password: str) -> str:
        response = self._session.request(
            "POST", "/backups", json={"password": password}, ok=(200, 201, 202)
        )
        body = response.json()
        if not isinstance(body, dict) or not body.get("id"):
            raise backups.bad_answer(self._session, response, "the answer names no task id")
        return str(body["id"])

    def _backups(self) -> list[LiveBackup]:
        response = self._session.request("GET", "/backups")
        body = backups.json_of(response)
        if isinstance(body, dict):  # tolerated: a paged answer like /tasks
            body = body.get("items")
        if body is None:
            return []
        if not isinstance(body, list):
            raise backups.bad_answer(self._session, response, "expected an array of backups")
        return [backup_entry(e) for e in body if isinstance(e, dict) and e.get("id")]

    def _running_tasks(self) -> list[LiveBackup]:
        # The state filter is exact: a just-triggered task is QUEUED, not yet RUNNING.
        return [
            backup
            for state in ("QUEUED", "RUNNING")
            for backup in self._tasks_in(state, keep=BackupState.RUNNING)
        ]

    def _tasks_in(self, state: str, *, keep: BackupState) -> list[LiveBackup]:
        found: list[LiveBackup] = []
        for page in range(_MAX_PAGES):
            response = self._session.request(
                "GET", "/tasks", params={"offset": page * _PAGE, "limit": _PAGE, "state": state}
            )
            body = backups.json_of(response) or {}
            items = body.get("items") if isinstance(body, dict) else body
            if not isinstance(items, list):
                raise backups.bad_answer(self._session, response, "expected a task list")
            for task in items:
                if isinstance(task, dict) and is_backup_task(task):
                    backup = task_to_backup(task)
                    if backup.state is keep:
                        found.append(backup)
            total = body.get("total") if isinstance(body, dict) else None
            if len(items) < _PAGE or (isinstance(total, int) and (page + 1) * _PAGE >= total):
                break
        return found


def _handle_for(backup: LiveBackup) -> str:
    # A running newcomer is a task (poll it); a finished one is a backup whose task ended.
    return backup.id if backup.state is BackupState.RUNNING else BACKUP_HANDLE + backup.id


def _source(policy: BackupPolicy) -> VcdaApplianceSource:
    if not isinstance(policy.source, VcdaApplianceSource):
        raise TypeError(f"policy {policy.name} has no vcdaAppliance source")
    return policy.source
