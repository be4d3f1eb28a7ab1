"""1C:Enterprise.Element application dumps, as a BackupApi (apis.md §2).

Built by ``backups.open_backup_api`` for ``api: element`` connections; called by fetching
(list) and applying (trigger, poll, delete). Speaks the Console API v2 through one
``HttpSession``: an OAuth client-credentials token (``id_token`` as Bearer), dumps under
``/console/api/v2/applications/{app}/dumps``, and the tolerated variants live servers
answer (a created dump as an array or an object, errors bare or wrapped, two date forms).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from controller.clients import backups, triggering
from controller.clients.backups import BackupState, LiveBackup
from controller.clients.http import HttpResponse, HttpSession, HttpSettings
from controller.manifests import BackupPolicy, ElementApplicationSource

TOKEN_PATH = "/console/sys/token"
API_PREFIX = "/console/api/v2"
READY = "Ready"
_FAILED = re.compile(r"error|fail", re.IGNORECASE)
# The policy's include flags as the dump entity spells them.
_FLAGS = (
    ("include-users", "include_users"),
    ("include-binary-data", "include_binary_data"),
    ("include-collaboration-registration-data", "include_collaboration_registration_data"),
)


class ElementAuthenticator:
    """Client-credentials login; the ``id_token`` (not ``access_token``) is the Bearer."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._basic,)

    def login(self, session: HttpSession) -> Mapping[str, str]:
        response = session.request(
            "POST",
            TOKEN_PATH,
            content=b"grant_type=client_credentials",
            headers={
                "Authorization": f"Basic {self._basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            authenticated=False,
            ok=(200,),
            idempotent=True,  # a lost token answer leaves an unused token: ask again
        )
        body = response.json()
        token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise backups.bad_answer(session, response, "the token answer has no id_token")
        return {"Authorization": f"Bearer {token}"}

    def logout(self, session: HttpSession, headers: Mapping[str, str]) -> None:
        """Nothing to do: the console has no logout; the token simply expires."""

    def is_expired(self, response: HttpResponse) -> bool:
        # 401 (code 16) for an expired token; 400 invalid_request for one the server
        # cannot read any more. Both mean: fetch a new token once and repeat.
        if response.status == 401:
            return True
        if response.status != 400:
            return False
        try:
            body = response.json()
        except Exception:  # by design: an unreadable 400 is a plain 400
            return False
        error = body.get("error") if isinstance(body, dict) else None
        code = body.get("error_code") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error.get("error_code", code)
        return code == "invalid_request" or error == "invalid_request"


def error_message(response: HttpResponse) -> str:
    """The server's words from ErrorData, bare or wrapped in ``{"error": ...}``.

    ``details`` is a string in the docs and an array on live servers; the token endpoint
    answers OAuth's ``error_code`` / ``error_description`` instead.
    """
    try:
        body = response.json()
    except Exception:  # by design: a non-JSON error body is shown as text
        return response.snippet(300)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return backups.server_text(body)
    if "error_description" in body or "error_code" in body:
        return backups.server_text(
            f"{body.get('error_code', '')}: {body.get('error_description', '')}".strip(": ")
        )
    message = backups.server_text(body.get("message"))
    details = backups.server_text(body.get("details"))
    text = f"{message} ({details})" if details and details != message else message or details
    status = body.get("status")
    return f"{status}: {text}" if status and text else text or response.snippet(300)


def parse_date(value: Any) -> datetime | None:
    """``12.04.2022 16:52:41`` (the docs, UTC) or ISO-8601 (live servers); None if neither."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return datetime.strptime(text, "%d.%m.%Y %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def to_backup(dump: Mapping[str, Any]) -> LiveBackup:
    status = str(dump.get("status") or "")
    if status == READY:
        state = BackupState.SUCCEEDED
    elif _FAILED.search(status):
        state = BackupState.FAILED
    else:
        state = BackupState.RUNNING
    message = ""
    if state is BackupState.FAILED:
        # Not in the docs; servers (and the emulator) that explain a failure use these.
        words = backups.server_text(
            dump.get("error-message") or dump.get("message") or dump.get("error")
        )
        message = f"dump status {status}" + (f": {words}" if words else "")
    return LiveBackup(
        id=str(dump.get("id", "")),
        state=state,
        created=parse_date(dump.get("date-created")),
        finished=None,  # the entity does not say when a dump became Ready
        message=message,
    )


def matches(dump: Mapping[str, Any], source: ElementApplicationSource) -> bool:
    """Whether a dump was made with the policy's include flags (a flag left out counts)."""
    return all(
        dump.get(key) is None or bool(dump[key]) == getattr(source, attr) for key, attr in _FLAGS
    )


class ElementBackupApi:
    """BackupApi for element: one dump per trigger, found again after a lost answer."""

    def __init__(
        self,
        settings: HttpSettings,
        auth: Mapping[str, str],
        *,
        operation_id: str | None = None,  # element has no correlation header
        **session_kwargs: Any,  # passed to HttpSession: transport, sleep, clock, ...
    ) -> None:
        authenticator = ElementAuthenticator(auth.get("clientId", ""), auth.get("clientSecret", ""))
        self._session = HttpSession(
            settings,
            authenticator=authenticator,
            secrets=(
                auth.get("clientSecret", ""),
                *authenticator.secrets,
                *session_kwargs.pop("secrets", ()),
            ),
            **session_kwargs,
            headers={"Accept": "application/json"},
            error_message=error_message,
        )

    def list_backups(self, policy: BackupPolicy) -> list[LiveBackup]:
        source = _source(policy)
        response = self._session.request("GET", _dumps(source))
        body = backups.json_of(response)
        if body is None:
            return []
        if not isinstance(body, list):
            raise backups.bad_answer(self._session, response, "expected an array of dumps")
        return [
            to_backup(dump)
            for dump in body
            if isinstance(dump, dict) and dump.get("id") and matches(dump, source)
        ]

    def trigger(self, policy: BackupPolicy) -> str:
        source = _source(policy)
        return triggering.trigger_once(
            start=lambda: self._create(source), listing=lambda: self.list_backups(policy)
        )

    def poll(self, policy: BackupPolicy, handle: str) -> LiveBackup:
        response = self._session.request("GET", f"{_dumps(_source(policy))}/{quote(handle)}")
        body = response.json()
        if not isinstance(body, dict):
            raise backups.bad_answer(self._session, response, "expected a dump object")
        return to_backup(body)

    def delete(self, policy: BackupPolicy, backup_id: str) -> None:
        # 404: already gone, e.g. our first DELETE was carried out but its answer lost.
        self._session.request(
            "DELETE", f"{_dumps(_source(policy))}/{quote(backup_id)}", ok=(200, 202, 204, 404)
        )

    def close(self) -> None:
        self._session.close()

    def _create(self, source: ElementApplicationSource) -> str:
        payload = {key: getattr(source, attr) for key, attr in _FLAGS}
        payload["description"] = source.description
        response = self._session.request("POST", _dumps(source), json=payload, ok=(200, 201))
        body = response.json()
        # The seed answers an array holding the new dump; some versions a bare object.
        dump = body[0] if isinstance(body, list) and body else body
        if not isinstance(dump, dict) or not dump.get("id"):
            # Some servers answer a success status with an ErrorData inside: show its words.
            said = isinstance(dump, dict) and ("error" in dump or "message" in dump)
            words = f": {error_message(response)}" if said else ""
            raise backups.bad_answer(
                self._session, response, f"the answer names no new dump id{words}"
            )
        return str(dump["id"])


def _source(policy: BackupPolicy) -> ElementApplicationSource:
    if not isinstance(policy.source, ElementApplicationSource):
        raise TypeError(f"policy {policy.name} has no elementApplication source")
    return policy.source


def _dumps(source: ElementApplicationSource) -> str:
    return f"{API_PREFIX}/applications/{quote(source.application_id, safe='')}/dumps"
