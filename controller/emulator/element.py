"""The emulated 1C:Enterprise.Element console API v2: tokens and application dumps.

Served by ``server.EmulatorServer`` under ``/element``; the controller's element client
talks to it in tests and in the sandbox. Follows ``spec/apis.md`` §2 and the original page
(``seeds/000_*.txt``); every behaviour the docs leave open is a switchable variant so client
tests can exercise each form a live server may answer:

- ``create_response``: ``"array"`` (the docs: 201 with ``[dump]``) | ``"object"``.
- ``error_shape``: ``"plain"`` (``ErrorData``) | ``"wrapped"`` (``{"error": {...}}``, live
  servers, ``details`` an array).
- ``date_format``: ``"dotted"`` (``12.04.2022 16:52:41``) | ``"iso"``
  (``2024-01-17T14:27:04.383Z``).
- ``expired_token``: ``"401"`` (code 16) | ``"400"`` (``invalid_request``).
- ``malformed_token``: ``"400"`` (``invalid_request``) | ``"401"`` (code 16).

Control actions beyond the shared ones (``backup_apis``): ``seed_application``
``{"id", "name"}`` and ``seed_backup`` (a dump that looks ``age_seconds`` old).
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from controller.emulator import backup_apis, core, element_tokens
from controller.emulator.backup_apis import check_keys, flag, number, text
from controller.emulator.backup_jobs import Lifecycle, Phase, seeded
from controller.emulator.storage import Storage

__all__ = ["ElementApi"]

APPLICATIONS = "applications"
DUMPS = "dumps"

API_PREFIX = "/console/api/v2/applications"
TOKEN_PATH = "/console/sys/token"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_FAILED_WORD = re.compile(r"error|fail", re.IGNORECASE)

# HTTP status → gRPC code and name, as ErrorData carries them (apis.md §2).
_GRPC = {
    400: (3, "INVALID_ARGUMENT"),
    401: (16, "UNAUTHENTICATED"),
    403: (7, "PERMISSION_DENIED"),
    404: (5, "NOT_FOUND"),
    405: (12, "UNIMPLEMENTED"),
    409: (6, "ALREADY_EXISTS"),
    429: (8, "RESOURCE_EXHAUSTED"),
    500: (13, "INTERNAL"),
    503: (14, "UNAVAILABLE"),
}

_FLAGS = {
    "include-users": "include_users",
    "include-binary-data": "include_binary_data",
    "include-collaboration-registration-data": "include_collaboration_registration_data",
}


class ElementApi(backup_apis.BackupEmulator):
    """The element console: ``POST /console/sys/token`` and ``/console/api/v2/applications``."""

    mount = "element"
    DEFAULT_SESSION_SECONDS = 3600.0  # "the token lives about an hour"
    VARIANTS: ClassVar[Mapping[str, backup_apis.Variant]] = {
        "create_response": backup_apis.Variant("array", ("array", "object")),
        "error_shape": backup_apis.Variant("plain", ("plain", "wrapped")),
        "date_format": backup_apis.Variant("dotted", ("dotted", "iso")),
        "expired_token": backup_apis.Variant("401", ("401", "400")),
        "malformed_token": backup_apis.Variant("400", ("400", "401")),
    }

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], float] = time.time,
        client_id: str = "converge",
        client_secret: str = "sandbox-element-secret",
        auto_create: bool = False,
    ) -> None:
        """``auto_create``: an unknown application id is taken as an existing application
        (the sandbox, where nobody seeds); tests keep the default and seed instead."""
        super().__init__(storage, clock=clock)
        self._auto_create = auto_create
        self._client_id = client_id
        self._client_secret = client_secret

    def credentials(self) -> dict[str, str]:
        return {"clientId": self._client_id, "clientSecret": self._client_secret}

    def collections(self) -> tuple[str, ...]:
        return (APPLICATIONS, DUMPS)

    # --- answers --------------------------------------------------------------------------

    def error_response(self, status: int, message: str, details: str = "") -> core.EmuResponse:
        code, name = _GRPC.get(status, (2, "UNKNOWN"))
        if self.variant("error_shape") == "wrapped":
            error = {"code": code, "status": name, "message": message, "details": []}
            if details:
                error["details"] = [{"@type": "type.googleapis.com/DebugInfo", "detail": details}]
            return core.json_response(status, {"error": error})
        return core.json_response(
            status, {"code": code, "status": name, "message": message, "details": details}
        )

    def _invalid_request(self, description: str) -> core.EmuResponse:
        """The OAuth-style answer to a token the server cannot even parse."""
        return core.json_response(
            400, {"error_code": "invalid_request", "error_description": description}
        )

    def dispatch(self, request: core.EmuRequest) -> core.EmuResponse:
        path = request.path.rstrip("/") or "/"
        if path == TOKEN_PATH:
            if request.method != "POST":
                raise core.EmuError(405, f"{request.method} is not allowed on {TOKEN_PATH}")
            return self._issue_token(request)
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            raise core.EmuError(404, f"no such resource: {path}")
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        parts = path[len(API_PREFIX) :].strip("/").split("/")
        if parts == [""]:
            raise core.EmuError(405, "listing applications is not emulated")
        app_id = self._uuid(parts[0])
        if len(parts) == 1:
            if request.method != "GET":
                raise core.EmuError(405, f"{request.method} is not allowed on {path}")
            return core.json_response(200, self._application(app_id))
        if parts[1] != "dumps" or len(parts) > 3:
            raise core.EmuError(404, f"no such resource: {path}")
        self._application(app_id)
        if len(parts) == 2:
            return self._dumps(request, app_id)
        return self._dump(request, app_id, self._uuid(parts[2]))

    # --- authentication -------------------------------------------------------------------

    def _issue_token(self, request: core.EmuRequest) -> core.EmuResponse:
        client_id, secret = element_tokens.basic_credentials(
            request.headers.get("Authorization", "")
        )
        if not (
            hmac.compare_digest(client_id.encode(), self._client_id.encode())
            and hmac.compare_digest(secret.encode(), self._client_secret.encode())
        ):
            self.harness.stats.record_login(ok=False)
            raise core.EmuError(401, "invalid client credentials")
        form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"))
        if form.get("grant_type") != ["client_credentials"]:
            self.harness.stats.record_login(ok=False)
            raise core.BadRequest("grant_type must be client_credentials")
        now = self.now()
        jti = self.new_uuid("token")
        token = element_tokens.sign(
            {
                "iss": "converge-emulator/element",
                "sub": client_id,
                "aud": "console",
                "iat": int(now),
                "exp": int(now + self.session_seconds),
                "jti": jti,
            }
        )
        self.open_session(jti, client=client_id)
        return core.json_response(
            200, {"id_token": token, "token_type": "Bearer", "access_token": "Not implemented"}
        )

    def _authenticate(self, request: core.EmuRequest) -> core.EmuResponse | None:
        """None when the Bearer token is good; else the answer refusing the call."""
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self.error_response(401, "authentication required: send a Bearer id_token")
        jti = element_tokens.token_id(token.strip())
        if jti is None:
            if self.variant("malformed_token") == "400":
                return self._invalid_request("The access token is malformed")
            return self.error_response(401, "the access token is malformed")
        if self.session(jti, idle=False) is None:
            if self.variant("expired_token") == "400":
                return self._invalid_request("The access token expired")
            return self.error_response(401, "the access token expired or was revoked")
        return None

    # --- applications and dumps -----------------------------------------------------------

    def _uuid(self, value: str) -> str:
        if not _UUID.match(value):
            raise core.BadRequest(f"{value} is not a valid UUID.")
        return value.lower()

    def _application(self, app_id: str) -> dict[str, Any]:
        app = self.storage.get(APPLICATIONS, app_id)
        if app is None and self._auto_create:
            app = self._seed_application(app_id, name=None, status="Ready")
        if app is None:
            raise core.EmuError(404, f"application {app_id} not found")
        return dict(app)

    def _dumps(self, request: core.EmuRequest, app_id: str) -> core.EmuResponse:
        if request.method == "GET":
            now = self.now()
            records = [r for _, r in self.storage.items(DUMPS) if r["application_id"] == app_id]
            records.sort(key=lambda r: (r["lifecycle"]["started_at"], r["number"]))
            return core.json_response(200, [self._render(r, now) for r in records])
        if request.method != "POST":
            raise core.EmuError(405, f"{request.method} is not allowed on dumps")
        body = request.json()
        if not isinstance(body, dict):
            raise core.BadRequest("the body must be a CreateApplicationDumpRequest object")
        for key in _FLAGS:
            if key in body and not isinstance(body[key], bool):
                raise core.BadRequest(f"{key} must be a boolean")
        if not isinstance(body.get("description", ""), str):
            raise core.BadRequest("description must be a string")
        lifecycle, failure = self.start_lifecycle()
        record = self._store_dump(
            app_id,
            flags={key: bool(body.get(key, False)) for key in _FLAGS},
            description=str(body.get("description", "")),
            lifecycle=lifecycle,
            status_word=failure.status if failure else None,
        )
        dump = self._render(record, self.now())
        return core.json_response(
            201, [dump] if self.variant("create_response") == "array" else dump
        )

    def _dump(self, request: core.EmuRequest, app_id: str, dump_id: str) -> core.EmuResponse:
        record = self.storage.get(DUMPS, dump_id)
        if record is None or record["application_id"] != app_id:
            raise core.EmuError(404, f"dump {dump_id} not found in application {app_id}")
        if request.method == "GET":
            return core.json_response(200, self._render(record, self.now()))
        if request.method == "PUT":
            body = request.json()
            if not isinstance(body, dict) or not isinstance(body.get("description"), str):
                raise core.BadRequest('the body must be {"description": <string>}')
            record = {**record, "description": body["description"]}
            self.storage.put(DUMPS, dump_id, record)
            return core.json_response(200, self._render(record, self.now()))
        if request.method == "DELETE":
            self.storage.delete(DUMPS, dump_id)
            return core.EmuResponse(204)
        raise core.EmuError(405, f"{request.method} is not allowed on a dump")

    def _store_dump(
        self,
        app_id: str,
        *,
        flags: dict[str, bool],
        description: str,
        lifecycle: Lifecycle,
        status_word: str | None,
    ) -> dict[str, Any]:
        number_ = self.next_number("dump")
        record: dict[str, Any] = {
            "id": self.new_uuid("dump"),
            "application_id": app_id,
            "number": number_,
            **flags,
            "description": description,
            "lifecycle": lifecycle.to_dict(),
            # The product's word for an unfinished or failed dump, when not the default.
            "status_word": status_word,
        }
        self.storage.put(DUMPS, record["id"], record)
        return record

    def _render(self, record: dict[str, Any], now: float) -> dict[str, Any]:
        """The ApplicationDumpData a server shows at ``now``."""
        lifecycle = Lifecycle.from_dict(record["lifecycle"])
        phase = lifecycle.phase(now)
        ready = phase is Phase.SUCCEEDED
        status = backup_apis.status_word(record, lifecycle, phase)
        if not status:
            status = {Phase.SUCCEEDED: "Ready", Phase.FAILED: "Error"}.get(phase, "Creating")
        base = f"{API_PREFIX}/{record['application_id']}/dumps/{record['id']}"
        dump: dict[str, Any] = {
            "id": record["id"],
            **{key: record[key] for key in _FLAGS},
            "user-list-file-ref": f"{base}/user-list" if ready else "",
            "application-file-ref": f"{base}/application" if ready else "",
            "status": status,
            "date-created": self._date(lifecycle.started_at),
            "description": record["description"],
            # Sizes appear once the files exist; made from the dump's number, so stable.
            "user-list-size-bytes": 2048 + 16 * record["number"]
            if ready and record["include-users"]
            else 0,
            "application-size-bytes": 10_485_760 + 4096 * record["number"] if ready else 0,
        }
        if phase is Phase.FAILED and lifecycle.message:
            # Not in the docs: the emulator's way to carry the server's words for a failure.
            dump["error-message"] = lifecycle.message
        return dump

    def _date(self, timestamp: float) -> str:
        moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
        if self.variant("date_format") == "iso":
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        return moment.strftime("%d.%m.%Y %H:%M:%S")

    # --- control --------------------------------------------------------------------------

    def api_control(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "seed_application":
            check_keys(payload, {"id", "name", "status"})
            return self._seed_application(
                str(text(payload, "id", None) or ""),
                name=text(payload, "name", None),
                status=text(payload, "status", "Ready"),
            )
        if action == "seed_backup":
            return self._seed_backup(payload)
        return NotImplemented

    def _seed_application(self, app_id: str, *, name: str | None, status: str) -> dict[str, Any]:
        if not _UUID.match(app_id):
            raise core.BadRequest(f"application id {app_id!r} is not a UUID")
        app = {"id": app_id.lower(), "name": name or f"app-{app_id[:8]}", "status": status}
        self.storage.put(APPLICATIONS, app["id"], app)
        return app

    def _seed_backup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A dump that looks ``age_seconds`` old: created (and, if Ready, done) back then.

        Payload: ``application_id`` (optional when exactly one application exists; an
        unknown one is created), ``age_seconds`` (0), ``status`` ("Ready"; a word matching
        /error|fail/i makes a failed dump, any other word one still in progress),
        ``message`` (a failure's words), ``description`` and the three ``include_*`` flags.
        """
        check_keys(
            payload,
            {"application_id", "age_seconds", "status", "message", "description", *_FLAGS.values()},
        )
        app_id = text(payload, "application_id", None)
        if app_id is None:
            apps = self.storage.keys(APPLICATIONS)
            if len(apps) != 1:
                raise core.BadRequest("application_id is required unless one application exists")
            app_id = apps[0]
        if self.storage.get(APPLICATIONS, str(app_id).lower()) is None:
            self._seed_application(app_id, name=None, status="Ready")
        status = str(text(payload, "status", "Ready"))
        if status == "Ready":
            phase = Phase.SUCCEEDED
        elif _FAILED_WORD.search(status):
            phase = Phase.FAILED
        else:
            phase = Phase.RUNNING
        lifecycle = seeded(
            now=self.now(),
            age_seconds=number(payload, "age_seconds", 0),
            took=0.0,  # date-created is the only time a dump shows: make it exactly the age
            phase=phase,
            message=str(text(payload, "message", "") or ""),
        )
        defaults = {"include_users": True, "include_binary_data": True}
        record = self._store_dump(
            str(app_id).lower(),
            flags={
                key: flag(payload, name, defaults.get(name, False)) for key, name in _FLAGS.items()
            },
            description=str(text(payload, "description", "seeded") or ""),
            lifecycle=lifecycle,
            status_word=None if phase is Phase.SUCCEEDED else status,
        )
        return self._render(record, self.now())
