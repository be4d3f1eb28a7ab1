"""The emulated VMware Cloud Director Availability appliance API: sessions, backups, tasks.

Served by ``server.EmulatorServer`` under ``/vcda``; the controller's vcda client talks to
it in tests and in the sandbox. Follows ``spec/apis.md`` §3 and the original page
(``seeds/002_*.txt``). Every call must ask for the versioned media type
``application/vnd.vmware.h4-v4.7+json`` (406 otherwise); every call but ``POST /sessions``
needs the ``X-VCAV-Auth`` token that login put in a response header. The ``operationID``
header of each call is counted in ``stats``. The backup file's password is checked for
presence and then forgotten: it is never stored, echoed or counted.

Variants (``set_variant``): ``generated_on`` ``"number"`` | ``"string"`` (``"1464261608370L"``,
as the docs show it once); ``delete_status`` ``204`` | ``200``; ``accept`` ``"strict"`` |
``"lenient"`` (also takes a missing, ``*/*`` or ``application/json`` Accept);
``result_type`` ``"always"`` (apis.md) | ``"on_success"`` (the docs: "populated only if
the execution was successful").

Own control action: ``seed_backup`` (a finished, failed or running backup task that looks
``age_seconds`` old; a success also lists its backup).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from controller.emulator import backup_apis, core
from controller.emulator.backup_apis import check_keys, number, text
from controller.emulator.backup_jobs import Lifecycle, Phase, seeded
from controller.emulator.storage import Storage

__all__ = ["VcdaApi"]

TASKS = "tasks"
BACKUPS = "backups"

MEDIA_TYPE = "application/vnd.vmware.h4-v4.7+json"
TOKEN_HEADER = "X-VCAV-Auth"
_LENIENT_ACCEPT = frozenset({"", "*/*", "application/*", "application/json"})

# Login body: type → (user field, password field).
_LOGIN_FIELDS = {
    "localUser": ("localUser", "localPassword"),
    "vcdCredentials": ("vcdUser", "vcdPassword"),
    "ssoCredentials": ("username", "password"),
}

_ERROR_CODES = {
    400: "InvalidRequest",
    401: "NotAuthenticated",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}
_STATES = {
    Phase.QUEUED: "QUEUED",
    Phase.RUNNING: "RUNNING",
    Phase.SUCCEEDED: "SUCCEEDED",
    Phase.FAILED: "FAILED",
}


def api_error(code: str, message: str) -> dict[str, Any]:
    """An ``ApiError`` body, with a Java-looking stack trace like the real appliance's."""
    return {
        "args": [],
        "code": code,
        "msg": message,
        "stacktrace": f"com.vmware.h4.api.error.exceptions.{code}Exception: {message}",
    }


def _ms(timestamp: float) -> int:
    return round(timestamp * 1000)


class VcdaApi(backup_apis.BackupEmulator):
    """The vcda appliance: ``/sessions``, ``/backups``, ``/tasks``."""

    mount = "vcda"
    DEFAULT_SESSION_SECONDS = 1800.0  # idle time before a token stops working
    VARIANTS: ClassVar[Mapping[str, backup_apis.Variant]] = {
        "generated_on": backup_apis.Variant("number", ("number", "string")),
        "delete_status": backup_apis.Variant(204, (204, 200)),
        "accept": backup_apis.Variant("strict", ("strict", "lenient")),
        "result_type": backup_apis.Variant("always", ("always", "on_success")),
    }

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], float] = time.time,
        user: str = "admin",
        password: str = "sandbox-vcda-pass",
    ) -> None:
        super().__init__(storage, clock=clock)
        self._user = user
        self._password = password
        self.operation_ids: Counter[str] = Counter()

    def credentials(self) -> dict[str, str]:
        return {"type": "localUser", "user": self._user, "password": self._password}

    def collections(self) -> tuple[str, ...]:
        return (TASKS, BACKUPS)

    def extra_stats(self) -> dict[str, Any]:
        return {
            **super().extra_stats(),
            "operation_ids": dict(sorted(self.operation_ids.items())),
        }

    def control(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "reset":
            with self.lock:
                self.operation_ids.clear()
        return super().control(action, payload)

    # --- answers --------------------------------------------------------------------------

    def error_response(self, status: int, message: str) -> core.EmuResponse:
        return core.json_response(
            status, api_error(_ERROR_CODES.get(status, "GeneralServerFailure"), message)
        )

    def dispatch(self, request: core.EmuRequest) -> core.EmuResponse:
        operation = request.headers.get("operationID")
        if operation:
            self.operation_ids[operation] += 1
        if not self._acceptable(request.headers.get("Accept", "")):
            raise core.EmuError(406, f"Not acceptable: send Accept: {MEDIA_TYPE}")
        path = request.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if path == "/sessions" and request.method == "POST":
            return self._login(request)
        if parts[0] not in ("sessions", "backups", "tasks") or len(parts) > 2:
            raise core.EmuError(404, f"Resource not found: {path}")
        token = request.headers.get(TOKEN_HEADER, "").strip()
        session = self.session(token, idle=True) if token else None
        if session is None:
            raise core.EmuError(401, "Authentication required.")
        route = (request.method, parts[0], len(parts))
        if route == ("DELETE", "sessions", 1):
            self.close_session(token)
            return core.EmuResponse(204)
        if route == ("GET", "sessions", 1):
            return core.json_response(200, self._session_body(session["user"]))
        if route == ("POST", "backups", 1):
            return self._generate(request, session["user"])
        if route == ("GET", "backups", 1):
            return core.json_response(200, self._backups())
        if route == ("DELETE", "backups", 2):
            return self._delete_backup(parts[1])
        if route == ("GET", "tasks", 1):
            return self._tasks(request)
        if route == ("GET", "tasks", 2):
            record = self.storage.get(TASKS, parts[1])
            if record is None:
                raise core.EmuError(404, f"Task {parts[1]} not found.")
            return core.json_response(200, self._render_task(record, self.now()))
        raise core.EmuError(405, f"Method {request.method} is not allowed on {path}")

    def _acceptable(self, accept: str) -> bool:
        media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        if MEDIA_TYPE in media:
            return True
        return self.variant("accept") == "lenient" and bool(media & _LENIENT_ACCEPT)

    # --- sessions -------------------------------------------------------------------------

    def _login(self, request: core.EmuRequest) -> core.EmuResponse:
        body = request.json()
        kind = body.get("type") if isinstance(body, dict) else None
        if kind not in _LOGIN_FIELDS:
            self.harness.stats.record_login(ok=False)
            allowed = ", ".join(_LOGIN_FIELDS)
            raise core.BadRequest(f"Invalid session request: type must be one of {allowed}.")
        user_field, password_field = _LOGIN_FIELDS[kind]
        user, password = body.get(user_field), body.get(password_field)
        if not (
            isinstance(user, str)
            and isinstance(password, str)
            and hmac.compare_digest(user.encode(), self._user.encode())
            and hmac.compare_digest(password.encode(), self._password.encode())
        ):
            self.harness.stats.record_login(ok=False)
            raise core.EmuError(401, "Invalid credentials.")
        # Opaque and deterministic: a digest of the n-th session's id.
        token = hashlib.sha256(self.new_uuid("session").encode()).hexdigest()
        self.open_session(token, user=user)
        return core.json_response(200, self._session_body(user), {TOKEN_HEADER: token})

    @staticmethod
    def _session_body(user: str) -> dict[str, Any]:
        return {"roles": ["ADMINISTRATORS"], "user": user, "authenticatedSites": []}

    # --- backups and tasks ----------------------------------------------------------------

    def _generate(self, request: core.EmuRequest, user: str) -> core.EmuResponse:
        body = request.json()
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(password, str) or not password:
            raise core.BadRequest("A backup password is required.")
        del password  # checked, never kept: no answer, stat or row may carry it
        lifecycle, failure = self.start_lifecycle()
        record = self._store_task(
            lifecycle, user=user, status_word=failure.status if failure else None
        )
        return core.json_response(202, self._render_task(record, self.now()))

    def _store_task(
        self, lifecycle: Lifecycle, *, user: str, status_word: str | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.new_uuid("task"),
            "number": self.next_number("task"),
            "user": user,
            "lifecycle": lifecycle.to_dict(),
            # The backup a success makes, named up front so the task and list agree.
            "backup_id": self.new_uuid("backup"),
            "status_word": status_word,
        }
        self.storage.put(TASKS, record["id"], record)
        if not lifecycle.fails:
            self.storage.put(BACKUPS, record["backup_id"], {"task_id": record["id"]})
        return record

    def _render_task(self, record: dict[str, Any], now: float) -> dict[str, Any]:
        lifecycle = Lifecycle.from_dict(record["lifecycle"])
        phase = lifecycle.phase(now)
        state = backup_apis.status_word(record, lifecycle, phase) or _STATES[phase]
        end = lifecycle.finished_at
        succeeded = phase is Phase.SUCCEEDED
        message = lifecycle.message or "Backup generation failed."
        show_type = succeeded or self.variant("result_type") == "always"
        return {
            "id": record["id"],
            "state": state,
            "progress": lifecycle.progress(now),
            "startTime": _ms(lifecycle.started_at),
            "lastUpdated": _ms(lifecycle.last_update(now)),
            "endTime": _ms(end) if end is not None and phase.finished else -1,
            "user": record["user"],
            "resultType": "BackupInfo" if show_type else None,
            "result": self._backup_info(record) if succeeded else None,
            "error": api_error("GeneralServerFailure", message) if phase is Phase.FAILED else None,
            "warnings": [],
            "workflowInfo": {},
        }

    def _backup_info(self, task: dict[str, Any]) -> dict[str, Any]:
        end = Lifecycle.from_dict(task["lifecycle"]).finished_at or 0.0
        generated: int | str = _ms(end)
        if self.variant("generated_on") == "string":
            generated = f"{generated}L"
        digest = hashlib.sha512(task["backup_id"].encode()).digest()
        return {
            "generatedOn": generated,
            "hash": "SHA-512:" + ":".join(f"{byte:02X}" for byte in digest),
            "id": task["backup_id"],
        }

    def _backups(self) -> list[dict[str, Any]]:
        """Backups whose task has succeeded, oldest first."""
        now = self.now()
        done = []
        for _, backup in self.storage.items(BACKUPS):
            task = self.storage.get(TASKS, backup["task_id"])
            if task is None:
                continue
            lifecycle = Lifecycle.from_dict(task["lifecycle"])
            if lifecycle.phase(now) is Phase.SUCCEEDED:
                done.append((lifecycle.finished_at, task["number"], task))
        done.sort(key=lambda item: (item[0], item[1]))
        return [self._backup_info(task) for _, _, task in done]

    def _delete_backup(self, backup_id: str) -> core.EmuResponse:
        if backup_id not in {b["id"] for b in self._backups()}:
            raise core.EmuError(404, f"Backup {backup_id} not found.")
        self.storage.delete(BACKUPS, backup_id)
        status = int(self.variant("delete_status"))
        return core.EmuResponse(status) if status == 204 else core.json_response(200, {})

    def _tasks(self, request: core.EmuRequest) -> core.EmuResponse:
        offset = _query_int(request, "offset", 0)
        limit = _query_int(request, "limit", 100)
        state = request.param("state")
        now = self.now()
        records = sorted(
            (record for _, record in self.storage.items(TASKS)),
            key=lambda r: (r["lifecycle"]["started_at"], r["number"]),
        )
        tasks = [self._render_task(record, now) for record in records]
        if state:
            tasks = [task for task in tasks if task["state"] == state.upper()]
        return core.json_response(
            200, {"items": tasks[offset : offset + limit], "total": len(tasks)}
        )

    # --- control --------------------------------------------------------------------------

    def api_control(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "seed_backup":
            return self._seed_backup(payload)
        return NotImplemented

    def _seed_backup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A backup task that looks ``age_seconds`` old.

        Payload: ``age_seconds`` (0; a finished task *ended* that long ago, so its backup's
        ``generatedOn`` is that old), ``status`` ("SUCCEEDED"; "FAILED" or another final
        word fails, "RUNNING"/"QUEUED" stays in progress), ``message`` (a failure's words),
        ``took_seconds`` (60), ``user``. Answers ``{"task": ..., "backup": ... | null}``.
        """
        check_keys(payload, {"age_seconds", "status", "message", "took_seconds", "user"})
        status = str(text(payload, "status", "SUCCEEDED")).upper()
        if status == "SUCCEEDED":
            phase = Phase.SUCCEEDED
        elif status in ("RUNNING", "QUEUED"):
            phase = Phase.RUNNING
        else:
            phase = Phase.FAILED
        lifecycle = seeded(
            now=self.now(),
            age_seconds=number(payload, "age_seconds", 0),
            took=number(payload, "took_seconds", 60),
            phase=phase,
            message=str(text(payload, "message", "") or ""),
        )
        record = self._store_task(
            lifecycle,
            user=str(text(payload, "user", self._user)),
            status_word=None if phase is Phase.SUCCEEDED else status,
        )
        succeeded = phase is Phase.SUCCEEDED
        return {
            "task": self._render_task(record, self.now()),
            "backup": self._backup_info(record) if succeeded else None,
        }


def _query_int(request: core.EmuRequest, name: str, default: int) -> int:
    value = request.param(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise core.BadRequest(f"Query parameter {name} must be a non-negative integer.")
    return int(value)
