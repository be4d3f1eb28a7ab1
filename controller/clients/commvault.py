"""Commvault DynamoDB backup jobs, as a BackupApi (apis.md §4).

Built by ``backups.open_backup_api`` for ``api: commvault`` connections; called by
fetching (list) and applying (trigger, poll). A trigger creates a task whose first job id
is the handle. Commvault answers some failures with HTTP 200 (a login with ``errList``, a
task with ``errorCode``): those are read here and raised as failures, never taken for
success. Deleting backups is not supported: retention is refused for commvault by
validation, and ``delete`` says so if it is ever reached.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from controller.clients import backups, triggering
from controller.clients.backups import BackupState, LiveBackup
from controller.clients.http import HttpResponse, HttpSession, HttpSettings
from controller.errors import AuthError, PermanentApiError
from controller.manifests import BackupPolicy, CommvaultDynamoDBSource

TOKEN_HEADER = "Authtoken"
CLOUD_APPS = 134  # applicationId of Cloud Apps; DynamoDB is a Cloud Apps instance
# Jobs listed per policy, newest first: plenty to find the newest success and the running
# ones, small enough for one page.
JOB_LIMIT = 100
# How far back finished jobs are looked up: a month, or four RPOs when that is longer,
# so "never" really means no success for a long time rather than a short window.
MIN_LOOKUP = timedelta(days=30)
_FINISHED_WORDS = ("completed", "committed", "failed", "killed")
_UNSUCCESSFUL = frozenset({"failed", "killed", "failed to start"})


class CommvaultAuthenticator:
    """``POST /Login`` with a base64 password; a 200 with ``errList`` is a refusal."""

    def __init__(self, username: str, password: str, *, device_id: str) -> None:
        self._username = username
        self._encoded = base64.b64encode(password.encode()).decode()
        self._device_id = device_id

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._encoded,)

    def login(self, session: HttpSession) -> Mapping[str, str]:
        body = {
            "mode": 4,
            "username": self._username,
            "password": self._encoded,
            "deviceId": self._device_id,
            "clientType": 30,
        }
        # idempotent: a lost login answer leaves at most an unused token; log in again.
        response = session.request(
            "POST", "/Login", json=body, authenticated=False, ok=(200,), idempotent=True
        )
        answer = backups.json_of(response)
        answer = answer if isinstance(answer, dict) else {}
        token = answer.get("token")
        if answer.get("errList") or not isinstance(token, str) or not token:
            message = backups.server_text(answer.get("errList")) or "the answer has no token"
            raise backups.bad_answer(
                session, response, f"login refused: {message}", error=AuthError
            )
        return {TOKEN_HEADER: token}

    def logout(self, session: HttpSession, headers: Mapping[str, str]) -> None:
        session.request("POST", "/Logout", headers=headers, authenticated=False)

    def is_expired(self, response: HttpResponse) -> bool:
        return response.status == 401


class CommvaultTokenAuthenticator:
    """A ready API token from the Connection: used as is, never logged out (it is the user's)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def login(self, session: HttpSession) -> Mapping[str, str]:
        return {TOKEN_HEADER: self._token}

    def logout(self, session: HttpSession, headers: Mapping[str, str]) -> None:
        """Nothing: logging out would revoke a token the user configured for other uses."""

    def is_expired(self, response: HttpResponse) -> bool:
        return response.status == 401


def error_message(response: HttpResponse) -> str:
    """``{"errorCode", "errorMessage"}`` or ``{"errList": [{"errLogMessage"}]}``, as text."""
    try:
        body = response.json()
    except Exception:  # by design: a non-JSON error body is shown as text
        return response.snippet(300)
    if isinstance(body, dict):
        if body.get("errList"):
            return backups.server_text(body["errList"])
        message = backups.server_text(body.get("errorMessage"))
        code = body.get("errorCode")
        if message:
            return f"{message} (errorCode {code})" if code not in (None, 0, "0") else message
    return backups.server_text(body) or response.snippet(300)


def job_to_backup(summary: Mapping[str, Any]) -> LiveBackup:
    status = str(summary.get("status") or "")
    low = status.lower()
    finished = any(word in low for word in _FINISHED_WORDS)
    if not finished:
        state = BackupState.RUNNING
    elif low in _UNSUCCESSFUL:
        state = BackupState.FAILED
    else:
        state = BackupState.SUCCEEDED  # "Completed w/ one or more errors" still counts
    message = ""
    if state is BackupState.FAILED:
        reason = backups.server_text(summary.get("pendingReason") or summary.get("JMError"))
        message = f"job {status}" + (f": {reason}" if reason else "")
    progress = summary.get("percentComplete")
    return LiveBackup(
        id=str(summary.get("jobId", "")),
        state=state,
        created=backups.epoch(summary.get("jobStartTime"), unit=1),
        finished=backups.epoch(summary.get("jobEndTime"), unit=1) if finished else None,
        message=message,
        progress=int(progress) if isinstance(progress, int | float) else None,
    )


def task_body(source: CommvaultDynamoDBSource) -> dict[str, Any]:
    """The CreateTask body that means "back this subclient up now" (apis.md §4)."""
    association: dict[str, Any] = {
        "clientName": source.client_name,
        "instanceName": source.instance_name,
        "backupsetName": source.backupset_name,
        "subclientId": source.subclient_id,
        "applicationId": CLOUD_APPS,
    }
    if source.subclient_name:
        association["subclientName"] = source.subclient_name
    return {
        "taskInfo": {
            "associations": [association],
            "task": {"taskType": 1},
            "subTasks": [
                {
                    "subTask": {"subTaskType": 2, "operationType": 2},
                    "options": {
                        "backupOpts": {"backupLevel": source.backup_level},
                        "commonOpts": {"notifyUserOnJobCompletion": False},
                    },
                }
            ],
        }
    }


class CommvaultBackupApi:
    """BackupApi for commvault: jobs of one subclient; delete is not supported."""

    def __init__(
        self,
        settings: HttpSettings,
        auth: Mapping[str, str],
        *,
        operation_id: str | None = None,  # commvault has no correlation header
        **session_kwargs: Any,  # passed to HttpSession: transport, sleep, clock, ...
    ) -> None:
        authenticator: CommvaultAuthenticator | CommvaultTokenAuthenticator
        secrets = [
            auth.get("password", ""),
            auth.get("token", ""),
            *session_kwargs.pop("secrets", ()),
        ]
        if auth.get("token") and not auth.get("password"):
            authenticator = CommvaultTokenAuthenticator(auth["token"])
        else:
            # A stable device id per connection, so the server sees one device, not many.
            device = uuid.uuid5(uuid.NAMESPACE_URL, f"converge:{settings.connection}")
            authenticator = CommvaultAuthenticator(
                auth.get("username", ""), auth.get("password", ""), device_id=str(device)
            )
            secrets.extend(authenticator.secrets)
        self._session = HttpSession(
            settings,
            authenticator=authenticator,
            secrets=secrets,
            **session_kwargs,
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            error_message=error_message,
        )

    def list_backups(self, policy: BackupPolicy) -> list[LiveBackup]:
        source = _source(policy)
        lookup = max(MIN_LOOKUP, timedelta(seconds=4 * (policy.max_age or 0)))
        body = {
            "scope": 1,
            "category": 0,  # all: active and finished
            "pagingConfig": {
                "sortField": "jobId",
                "sortDirection": 1,  # descending: newest first
                "offset": 0,
                "limit": JOB_LIMIT,
            },
            "jobFilter": {
                "completedJobLookupTime": int(lookup.total_seconds()),
                "jobTypeList": ["Backup"],
                "entity": {"subclientId": source.subclient_id},
            },
        }
        # A read despite POST: safe to repeat after a lost answer.
        response = self._session.request("POST", "/Jobs", json=body, idempotent=True)
        return [
            job_to_backup(summary)
            for summary in self._summaries(response)
            if _of_subclient(summary, source)
        ]

    def trigger(self, policy: BackupPolicy) -> str:
        source = _source(policy)
        return triggering.trigger_once(
            start=lambda: self._create_task(source), listing=lambda: self.list_backups(policy)
        )

    def poll(self, policy: BackupPolicy, handle: str) -> LiveBackup:
        response = self._session.request("GET", f"/Job/{quote(handle, safe='')}")
        summaries = self._summaries(response)
        if not summaries:
            # Right after submission the job is not listed yet: it is starting, not gone.
            return LiveBackup(id=handle, state=BackupState.RUNNING, created=None, finished=None)
        return job_to_backup(summaries[0])

    def delete(self, policy: BackupPolicy, backup_id: str) -> None:
        raise PermanentApiError(
            f"deleting backup job {backup_id} is not supported: converge keeps no retention "
            "for commvault (the subclient's storage policy does)",
            connection=self._session.connection,
        )

    def close(self) -> None:
        self._session.close()

    def _create_task(self, source: CommvaultDynamoDBSource) -> str:
        response = self._session.request("POST", "/CreateTask", json=task_body(source))
        body = backups.json_of(response)
        if not isinstance(body, dict):
            raise backups.bad_answer(self._session, response, "expected a task object")
        if body.get("errorCode") not in (None, 0, "0"):
            # Commvault reports a refused task with HTTP 200 and an errorCode.
            raise backups.bad_answer(self._session, response, error_message(response))
        jobs = body.get("jobIds")
        if not isinstance(jobs, list) or not jobs:
            raise backups.bad_answer(self._session, response, "the answer names no job id")
        return str(jobs[0])

    def _summaries(self, response: HttpResponse) -> list[Mapping[str, Any]]:
        body = backups.json_of(response)
        if body is None:
            return []
        if not isinstance(body, dict):
            raise backups.bad_answer(self._session, response, "expected a job list object")
        jobs = body.get("jobs") or []
        if not isinstance(jobs, list):
            raise backups.bad_answer(self._session, response, "expected 'jobs' to be an array")
        return [
            job["jobSummary"]
            for job in jobs
            if isinstance(job, dict) and isinstance(job.get("jobSummary"), dict)
        ]


def _of_subclient(summary: Mapping[str, Any], source: CommvaultDynamoDBSource) -> bool:
    # The server filters by entity already; this guards against servers that ignore it.
    subclient = summary.get("subclient")
    if not isinstance(subclient, dict) or subclient.get("subclientId") is None:
        return True
    return str(subclient["subclientId"]) == str(source.subclient_id)


def _source(policy: BackupPolicy) -> CommvaultDynamoDBSource:
    if not isinstance(policy.source, CommvaultDynamoDBSource):
        raise TypeError(f"policy {policy.name} has no commvaultDynamoDB source")
    return policy.source
