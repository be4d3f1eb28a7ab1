"""The emulated Commvault Command Center REST API: login, DynamoDB backup tasks and jobs.

Served by ``server.EmulatorServer`` under ``/commvault/commandcenter/api`` (request paths
here are what follows: ``/Login``, ``/CreateTask``, ...); the controller's commvault
client talks to it in tests and in the sandbox. Follows ``spec/apis.md`` §4 and the
original page (``seeds/003_*.txt``), including the product's habits a client must survive:
paths are case-insensitive; a refused login and a refused task answer **HTTP 200** with an
error body; the first poll(s) of a new job answer an empty job list.

Variants (``set_variant``): ``login_failure`` ``"200"`` | ``"401"``; ``error_status``
``"200"`` (a refused CreateTask answers 200) | ``"4xx"`` (400 invalid, 404 unknown
subclient); ``empty_job_polls`` (an integer, default 1: how many ``GET /Job/{id}`` answers
after submission are empty); ``queued_status`` ``"Running"`` | ``"Waiting"`` |
``"Pending"`` | ``"Queued"`` (a job's word before work starts); ``success_status``
``"Completed"`` | ``"Completed w/ one or more errors"`` | ``"Completed w/ one or more
warnings"`` | ``"Committed"``.

Own control actions: ``seed_subclient``, ``seed_backup`` (a job that looks
``age_seconds`` old) and ``create_api_token`` (a ready ``Authtoken`` that never idles out).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from controller.emulator import backup_apis, core
from controller.emulator.backup_apis import check_keys, number, text
from controller.emulator.backup_jobs import Lifecycle, Phase, seeded
from controller.emulator.commvault_jobs import (
    LEVELS,
    NOT_FOUND,
    Refused,
    jobs_query,
    parse_task,
    seed_phase,
    subclient_record,
)
from controller.emulator.storage import Storage

__all__ = ["CommvaultApi"]

SUBCLIENTS = "subclients"
JOBS = "jobs"

LOGIN_REFUSED = 5  # the errList errorCode of a refused login


class CommvaultApi(backup_apis.BackupEmulator):
    """Command Center: ``/Login``, ``/Logout``, ``/CreateTask``, ``/Job/{id}``, ``/Jobs``."""

    mount = "commvault"
    DEFAULT_SESSION_SECONDS = 1800.0  # "the token expires after 30 minutes idle"
    VARIANTS: ClassVar[Mapping[str, backup_apis.Variant]] = {
        "login_failure": backup_apis.Variant("200", ("200", "401")),
        "error_status": backup_apis.Variant("200", ("200", "4xx")),
        "empty_job_polls": backup_apis.Variant(1),
        "queued_status": backup_apis.Variant(
            "Running", ("Running", "Waiting", "Pending", "Queued")
        ),
        "success_status": backup_apis.Variant(
            "Completed",
            (
                "Completed",
                "Completed w/ one or more errors",
                "Completed w/ one or more warnings",
                "Committed",
            ),
        ),
    }

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], float] = time.time,
        username: str = "admin",
        password: str = "sandbox-commvault-pass",
        auto_create: bool = False,
    ) -> None:
        """``auto_create``: a CreateTask naming an unknown subclient creates it (the sandbox,
        where nobody seeds); tests keep the default and seed with ``seed_subclient``."""
        super().__init__(storage, clock=clock)
        self._username = username
        self._password = password
        self._auto_create = auto_create

    def credentials(self) -> dict[str, str]:
        return {"username": self._username, "password": self._password}

    def collections(self) -> tuple[str, ...]:
        return (SUBCLIENTS, JOBS)

    # --- answers --------------------------------------------------------------------------

    def error_response(self, status: int, message: str) -> core.EmuResponse:
        return core.json_response(status, {"errorCode": status, "errorMessage": message})

    def _refused(self, refusal: Refused) -> core.EmuResponse:
        """A refused request: HTTP 200 with an error body, or a 4xx under ``error_status``."""
        status = 200 if self.variant("error_status") == "200" else refusal.status
        return core.json_response(
            status, {"errorCode": refusal.code, "errorMessage": refusal.message}
        )

    def dispatch(self, request: core.EmuRequest) -> core.EmuResponse:
        path = request.path.rstrip("/").lower() or "/"
        parts = path.strip("/").split("/")
        if path == "/login":
            self._only(request, "POST")
            return self._login(request)
        if parts[0] not in ("logout", "createtask", "job", "jobs"):
            raise core.EmuError(404, f"no such resource: {request.path}")
        token = _token_key(request.headers.get("Authtoken", ""))
        if not token or self.session(token, idle=True) is None:
            raise core.EmuError(401, "Authtoken is missing, invalid or expired")
        if path == "/logout":
            self._only(request, "POST")
            self.close_session(token)
            return core.EmuResponse(200, b"User logged out", {"Content-Type": "text/plain"})
        if path == "/createtask":
            self._only(request, "POST")
            return self._create_task(request)
        if path == "/jobs":
            self._only(request, "POST")
            return self._jobs(request)
        if parts[0] == "job" and len(parts) == 2:
            self._only(request, "GET")
            return self._job(parts[1])
        raise core.EmuError(404, f"no such resource: {request.path}")

    @staticmethod
    def _only(request: core.EmuRequest, method: str) -> None:
        if request.method != method:
            raise core.EmuError(405, f"{request.method} is not allowed on {request.path}")

    # --- login ----------------------------------------------------------------------------

    def _login(self, request: core.EmuRequest) -> core.EmuResponse:
        body = request.json()
        body = body if isinstance(body, dict) else {}
        user, encoded = body.get("username"), body.get("password")
        password = _unbase64(encoded) if isinstance(encoded, str) else None
        if not (
            isinstance(user, str)
            and password is not None
            and hmac.compare_digest(user.encode(), self._username.encode())
            and hmac.compare_digest(password.encode(), self._password.encode())
        ):
            self.harness.stats.record_login(ok=False)
            status = 200 if self.variant("login_failure") == "200" else 401
            refusal = {"errorCode": LOGIN_REFUSED, "errLogMessage": "Invalid Username or Password"}
            return core.json_response(status, {"errList": [refusal]})
        key = self._new_token_key()
        self.open_session(key, user=user)
        return core.json_response(
            200,
            {
                "aliasName": "1",
                "userGUID": self.new_uuid("user-guid").upper(),
                "loginAttempts": 0,
                "remainingLockTime": 0,
                "smtpAddress": f"{user}@commvault.invalid",
                "userName": user,
                "providerType": 1,
                "ccn": 0,
                "token": f"QSDK {key}",
                "forcePasswordChange": False,
                "isAccountLocked": False,
            },
        )

    def _new_token_key(self) -> str:
        # Opaque and deterministic: a digest of the n-th token's id, as Commvault's long hex.
        return hashlib.sha512(self.new_uuid("token").encode()).hexdigest()

    # --- tasks and jobs -------------------------------------------------------------------

    def _create_task(self, request: core.EmuRequest) -> core.EmuResponse:
        try:
            task = parse_task(request.json())
            subclient = self.storage.get(SUBCLIENTS, str(task.subclient_id))
            if subclient is None and self._auto_create:
                subclient = self._seed_subclient(task.subclient_record())
            if subclient is None:
                raise Refused(NOT_FOUND, 404, f"subclient {task.subclient_id} not found")
            task.check_matches(subclient)
        except Refused as refusal:
            return self._refused(refusal)
        lifecycle, failure = self.start_lifecycle()
        job = self._store_job(
            subclient,
            level=task.backup_level,
            lifecycle=lifecycle,
            status_word=failure.status if failure else None,
            polls=0,
        )
        task_id = self.next_number("task") + 500
        return core.json_response(200, {"taskId": task_id, "jobIds": [str(job["jobId"])]})

    def _store_job(
        self,
        subclient: Mapping[str, Any],
        *,
        level: str,
        lifecycle: Lifecycle,
        status_word: str | None,
        polls: int,
        success_word: str | None = None,
    ) -> dict[str, Any]:
        job = {
            "jobId": self.next_number("job") + 10_000,
            "subclient": dict(subclient),
            "level": level,
            "lifecycle": lifecycle.to_dict(),
            "status_word": status_word,
            "success_word": success_word,  # a seeded success's own word ("Committed", ...)
            # How many GET /Job answers the job has had; the first ones come back empty.
            "polls": polls,
        }
        self.storage.put(JOBS, str(job["jobId"]), job)
        return job

    def _job(self, job_id: str) -> core.EmuResponse:
        if not job_id.isdigit():
            raise core.BadRequest(f"invalid job id {job_id!r}")
        job = self.storage.get(JOBS, job_id)
        if job is None:
            return core.json_response(200, {"totalRecordsWithoutPaging": 0, "jobs": []})
        if job["polls"] < int(self.variant("empty_job_polls")):
            self.storage.put(JOBS, job_id, {**job, "polls": job["polls"] + 1})
            return core.json_response(200, {"totalRecordsWithoutPaging": 0, "jobs": []})
        summary = self._summary(job, self.now())
        return core.json_response(200, {"totalRecordsWithoutPaging": 1, "jobs": [summary]})

    def _jobs(self, request: core.EmuRequest) -> core.EmuResponse:
        body = request.json() if request.body.strip() else {}
        try:
            query = jobs_query(body)
        except Refused as refusal:
            return self._refused(refusal)
        now = self.now()
        selected = []
        for _, job in self.storage.items(JOBS):
            lifecycle = Lifecycle.from_dict(job["lifecycle"])
            finished = lifecycle.phase(now).finished
            end = lifecycle.finished_at if finished else None
            if query.wants(job["subclient"]["subclientId"], finished=finished, end=end, now=now):
                selected.append(self._summary(job, now))
        total, page = query.page(selected)
        return core.json_response(200, {"totalRecordsWithoutPaging": total, "jobs": page})

    def _summary(self, job: Mapping[str, Any], now: float) -> dict[str, Any]:
        """``{"jobSummary": {...}}`` as the server shows the job at ``now``."""
        lifecycle = Lifecycle.from_dict(job["lifecycle"])
        phase = lifecycle.phase(now)
        word = backup_apis.status_word(job, lifecycle, phase)
        if word:
            status = word
        elif phase is Phase.SUCCEEDED:
            status = job.get("success_word") or self.variant("success_status")
        elif phase is Phase.FAILED:
            status = "Failed"
        elif phase is Phase.QUEUED:
            status = self.variant("queued_status")
        else:
            status = "Running"
        end = lifecycle.finished_at if phase.finished else None
        subclient = job["subclient"]
        summary = {
            "jobId": job["jobId"],
            "status": status,
            "localizedStatus": status,
            "percentComplete": lifecycle.progress(now),
            "jobStartTime": int(lifecycle.started_at),
            "jobEndTime": int(end) if end is not None else 0,
            "lastUpdateTime": int(lifecycle.last_update(now)),
            "backupLevelName": LEVELS[job["level"]],
            "jobType": "Backup",
            "localizedOperationName": "Backup",
            "appTypeName": "Cloud Apps",
            "pendingReason": lifecycle.message if phase is Phase.FAILED else "",
            "destClientName": subclient["clientName"],
            "subclient": {**subclient, "applicationId": 134},
        }
        return {"jobSummary": summary}

    # --- control --------------------------------------------------------------------------

    def api_control(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "seed_subclient":
            return self._seed_subclient(subclient_record(payload))
        if action == "seed_backup":
            return self._seed_backup(payload)
        if action == "create_api_token":
            check_keys(payload, set())
            key = self._new_token_key()
            now = self.now()
            record = {"user": self._username, "created": now, "last_used": now, "permanent": True}
            self.storage.put(backup_apis.SESSIONS, key, record)
            return {"token": f"QSDK {key}"}
        return NotImplemented

    def _seed_subclient(self, record: dict[str, Any]) -> dict[str, Any]:
        self.storage.put(SUBCLIENTS, str(record["subclientId"]), record)
        return record

    def _seed_backup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A job that looks ``age_seconds`` old; answers its ``jobSummary``.

        Payload: ``subclient_id`` (optional when exactly one subclient exists; an unknown
        one is created with default names), ``age_seconds`` (0: a finished job *ended*
        that long ago), ``status`` ("Completed"; "Failed", "Killed", "Failed to Start" fail;
        a word that is not finished, e.g. "Running", stays in progress), ``backup_level``
        ("INCREMENTAL"), ``took_seconds`` (60), ``message`` (a failure's pendingReason).
        """
        check_keys(
            payload,
            {"subclient_id", "age_seconds", "status", "backup_level", "took_seconds", "message"},
        )
        subclient_id = payload.get("subclient_id")
        if subclient_id is None:
            known = self.storage.keys(SUBCLIENTS)
            if len(known) != 1:
                raise core.BadRequest("subclient_id is required unless one subclient exists")
            subclient_id = known[0]
        subclient = self.storage.get(SUBCLIENTS, str(subclient_id))
        if subclient is None:
            subclient = self._seed_subclient(subclient_record({"subclient_id": subclient_id}))
        level = str(text(payload, "backup_level", "INCREMENTAL")).upper()
        if level not in LEVELS:
            raise core.BadRequest(f"backup_level must be one of {', '.join(LEVELS)}")
        status = str(text(payload, "status", "Completed"))
        phase = seed_phase(status)
        lifecycle = seeded(
            now=self.now(),
            age_seconds=number(payload, "age_seconds", 0),
            took=number(payload, "took_seconds", 60),
            phase=phase,
            message=str(text(payload, "message", "") or ""),
        )
        job = self._store_job(
            subclient,
            level=level,
            lifecycle=lifecycle,
            status_word=None if phase is Phase.SUCCEEDED else status,
            polls=1_000_000,  # an old job is long known: never answered empty
            success_word=status if phase is Phase.SUCCEEDED else None,
        )
        return self._summary(job, self.now())


def _token_key(header: str) -> str:
    """The hex part of ``Authtoken: QSDK <hex>`` (the prefix is optional on the way in)."""
    value = header.strip()
    if value[:5].upper() == "QSDK ":
        value = value[5:].strip()
    return value


def _unbase64(encoded: str) -> str | None:
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
