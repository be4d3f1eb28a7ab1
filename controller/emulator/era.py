"""The emulated Era REST API v1: sessions and roleapps with their archive (apis.md §1).

Mounted by ``server.EmulatorServer`` at ``/era``; built by ``controller.emulator.build_apis``.
Sessions and bans are ``era_sessions``; the list grammar is ``era_query``; the entity
rules (defaults, type checks, server-owned fields) are ``era_roleapps``. Roleapps and their
archives persist through ``storage.Storage`` (collections ``roleapps`` and ``attachments``).

Choices where Era's documentation is silent (documented for the controller's authors):

- Every error is ``{"error_code": 1000 + status, "error_message": ...}``, routing errors too.
- A failed login is 401; a banned IP's login is 403 (1403, the message says "banned").
- The session limit evicts the least recently used session (see ``era_sessions``).
- Paging: ``limit`` defaults to ``default_limit`` (100) and is capped at ``page_cap``
  (1000): a page may be shorter than asked and still not be the last.
- The default order is ``ext.ct`` then ``id``, so paging is stable; ``order`` sorts on top
  of it. The sorted list is cached per (filter, order) and dropped on every write.
  Each entity's encoded shape per (mask, flat) is cached too (``era_pages``).
- ``PUT .../attachment`` answers 204; ``DELETE`` on the entity or archive answers 204.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controller.emulator import core, era_pages, era_query, era_roleapps, era_sessions, storage

__all__ = ["DEFAULT_CREDENTIALS", "EraApi", "error_response"]

DEFAULT_CREDENTIALS = {"domain": "sandbox.era", "login": "converge", "password": "sandbox-era-pass"}

_SESSIONS = "/rest/v1/iam/sessions"
_CURRENT = "/rest/v1/iam/sessions/current"
_ROLEAPPS = "/rest/v1/domain/roleapps"
_ONE = re.compile(r"^/rest/v1/domain/roleapps/([^/]+)$")
_ARCHIVE = re.compile(r"^/rest/v1/domain/roleapps/([^/]+)/attachment$")
_ORDER_CACHE_SIZE = 32  # distinct (filter, order) listings kept between writes


def error_response(status: int, message: str) -> core.EmuResponse:
    """Era's error body: ``{"error_code": 1000 + status, "error_message": message}``."""
    return core.json_response(status, {"error_code": 1000 + status, "error_message": message})


_ID_SEGMENT = re.compile(r"^(/rest/v1/domain/roleapps/)[^/]+")


def _stats_template(path: str) -> str:
    # Client-chosen ids need not look like UUIDs: template by position, not by shape.
    return _ID_SEGMENT.sub(r"\1{id}", path)


class EraApi:
    """One Era installation: accounts, sessions, roleapps and archives."""

    mount = "era"

    def __init__(
        self,
        storage: storage.Storage,
        *,
        clock: Callable[[], float] = time.time,
        page_cap: int = 1000,
        default_limit: int = 100,
        accounts: Iterable[Mapping[str, str]] = (DEFAULT_CREDENTIALS,),
        session_idle: float = 600.0,
        max_sessions: int = 10,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self.page_cap = page_cap
        self.default_limit = default_limit
        self._accounts = [dict(account) for account in accounts]
        if not self._accounts:
            raise ValueError("EraApi needs at least one account")
        self.sessions = era_sessions.SessionTable(
            clock=clock, idle_timeout=session_idle, max_per_user=max_sessions
        )
        self._harness = core.Harness(template=_stats_template)
        self._lock = threading.RLock()
        self._listings: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._pages = era_pages.PageEncoder()

    # --- EmulatedApi ----------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        return dict(self._accounts[0])

    def error_response(self, status: int, message: str) -> core.EmuResponse:
        return error_response(status, message)

    def close(self) -> None:
        self._storage.close()

    def handle(self, request: core.EmuRequest) -> core.EmuResponse:
        return self._harness.run(request, self._dispatch, error_response=error_response)

    def control(self, action: str, payload: dict[str, Any]) -> Any:
        if action == "reset":
            with self._lock:
                self._storage.clear()
                self._listings.clear()
                self._pages.clear()
            self.sessions.reset()
            self._harness.reset()
            return {"reset": True}
        if action == "seed":
            return {"ids": self._seed(payload.get("roleapps", []))}
        if action == "set_page_cap":
            return self._set_paging(payload)
        if action == "expire_sessions":
            return {"expired": self.sessions.expire_all()}
        if action == "edit":
            return self._edit(payload)
        if action == "stats":
            stats = self._harness.control("stats", payload)
            return {**stats, "sessions": self.sessions.count(), "roleapps": self._count()}
        return self._harness.control(action, payload)

    # --- routing --------------------------------------------------------------------------

    def _dispatch(self, request: core.EmuRequest) -> core.EmuResponse:
        path = request.path.rstrip("/") or "/"
        method = request.method
        if path == _SESSIONS:
            self._allow(method, "POST")
            return self._login(request)
        if path == _CURRENT:
            self._allow(method, "GET", "DELETE")
            token = self._authenticate(request)
            if method == "DELETE":
                self.sessions.close(token)
                return core.EmuResponse(204)
            session = self.sessions.touch(token)
            return core.json_response(200, {"user": session.user if session else ""})
        if path == _ROLEAPPS:
            self._allow(method, "GET", "POST", "LOOKUP")
            self._authenticate(request)
            if method == "POST":
                return self._create(request)
            if method == "LOOKUP":
                return self._lookup(request)
            return self._list(request)
        if match := _ONE.match(path):
            self._allow(method, "GET", "PATCH", "DELETE")
            self._authenticate(request)
            if method == "PATCH":
                return self._patch(match[1], request)
            if method == "DELETE":
                return self._delete(match[1])
            return self._read(match[1], request)
        if match := _ARCHIVE.match(path):
            self._allow(method, "GET", "HEAD", "PUT", "DELETE")
            self._authenticate(request)
            return self._archive(match[1], request)
        raise core.EmuError(404, f"no such resource: {request.path}")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method == "HEAD" and "GET" in allowed:
            return  # the server sends the headers of the GET answer without its body
        if method not in allowed:
            allow = ", ".join(allowed)
            raise core.EmuError(
                405, f"method {method} is not allowed here", headers={"Allow": allow}
            )

    # --- sessions -------------------------------------------------------------------------

    def _login(self, request: core.EmuRequest) -> core.EmuResponse:
        body = request.json()
        if not isinstance(body, dict):
            raise core.BadRequest("the login body must be a JSON object")
        for field in ("domain", "login", "pwd"):
            if not isinstance(body.get(field), str):
                raise core.BadRequest(f"{field} is required and must be a string")
        if self.sessions.banned(request.client):
            self._harness.stats.record_login(ok=False)
            raise core.EmuError(
                403, f"{request.client} is banned for too many failed logins; try later"
            )
        account = next(
            (
                a
                for a in self._accounts
                if (a["domain"], a["login"], a["password"])
                == (body["domain"], body["login"], body["pwd"])
            ),
            None,
        )
        if account is None:
            self._harness.stats.record_login(ok=False)
            self.sessions.record_failure(request.client)
            raise core.EmuError(401, "invalid domain, login or password")
        self._harness.stats.record_login()
        token = self.sessions.open(f"{account['domain']}/{account['login']}")
        if body.get("session_type") == "api":
            return core.json_response(200, {"session_token": token})
        cookie = f"EraSession={token}; Path=/; HttpOnly"
        return core.json_response(200, {}, {"Set-Cookie": cookie})

    def _authenticate(self, request: core.EmuRequest) -> str:
        """The request's live session token; 401 when it has none or it expired."""
        token = ""
        authorization = request.headers.get("Authorization") or ""
        if authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        else:
            for cookie in (request.headers.get("Cookie") or "").split(";"):
                name, _, value = cookie.strip().partition("=")
                if name == "EraSession":
                    token = value
        if not token:
            raise core.EmuError(401, "no session: log in first")
        if self.sessions.touch(token) is None:
            raise core.EmuError(401, "the session has expired or does not exist")
        return token

    # --- roleapps -------------------------------------------------------------------------

    def _now(self) -> str:
        return era_query.timestamp(self._clock())

    def _count(self) -> int:
        return self._storage.count("roleapps")

    def _get(self, roleapp_id: str) -> dict[str, Any]:
        entity = self._storage.get("roleapps", roleapp_id)
        if entity is None:
            raise core.EmuError(404, f"roleapp {roleapp_id} not found")
        return entity

    def _store(self, entity: dict[str, Any]) -> bytes:
        """Persist a written entity; its JSON, encoded once for storage and the answer."""
        # Called with self._lock held: every write drops the cached listings.
        text = core.json_text(entity)
        self._storage.put("roleapps", entity["id"], entity, text=text)
        self._listings.clear()
        return text.encode("utf-8")

    def _shape(self, entity: Mapping[str, Any], request: core.EmuRequest) -> Any:
        return self._shaper(request)[1](entity)

    @staticmethod
    def _shaper(
        request: core.EmuRequest,
    ) -> tuple[era_pages.ShapeKey, Callable[[Mapping[str, Any]], Any]]:
        """The request's ``mask`` and ``flat``, parsed once for a whole page, as a shaping
        function and the key its results are cached under."""
        mask = era_query.parse_mask(request.param("mask"))
        flat = era_query.parse_bool(request.param("flat"), "flat")

        def shape(entity: Mapping[str, Any]) -> Any:
            shaped = era_query.apply_mask(entity, mask) if mask is not None else entity
            return era_query.flatten(shaped) if flat else shaped

        key = (None if mask is None else tuple(tuple(parts) for parts in mask), flat)
        return key, shape

    def _list(self, request: core.EmuRequest) -> core.EmuResponse:
        offset = _int_param(request, "offset", 0)
        limit = _int_param(request, "limit", self.default_limit)
        # Validate every parameter first, so an empty page still rejects bad input.
        era_query.parse_filter(request.param("filter"))
        era_query.parse_order(request.param("order"))
        key, shape = self._shaper(request)
        listing = self._listing(request.param("filter") or "", request.param("order") or "")
        page = listing[offset : offset + min(limit, self.page_cap)]
        return core.encoded_json_response(200, self._pages.encode(page, key, shape))

    def _listing(self, filter_text: str, order_text: str) -> list[dict[str, Any]]:
        """Filtered and sorted roleapps, cached until the next write."""
        key = (filter_text.strip(), order_text.strip())
        with self._lock:
            cached = self._listings.get(key)
            if cached is not None:
                return cached
            base = self._listings.get(("", ""))
            if base is None:
                entities = [entity for _, entity in self._storage.items("roleapps")]
                entities.sort(key=lambda e: (str(era_query.get_path(e, "ext.ct", "")), e["id"]))
                base = self._listings[("", "")] = entities
            result = base
            conditions = era_query.parse_filter(filter_text)
            if conditions:
                result = [e for e in result if era_query.matches(e, conditions)]
            order = era_query.parse_order(order_text)
            if order:
                result = era_query.sort_entities(result, order)
            if len(self._listings) >= _ORDER_CACHE_SIZE:
                self._listings.clear()
            self._listings[key] = result
            return result

    def _read(self, roleapp_id: str, request: core.EmuRequest) -> core.EmuResponse:
        return core.json_response(200, self._shape(self._get(roleapp_id), request))

    def _create(self, request: core.EmuRequest) -> core.EmuResponse:
        body = request.json()
        now = self._now()
        with self._lock:
            entity = era_roleapps.new_entity(body, now=now)
            if self._storage.get("roleapps", entity["id"]) is not None:
                raise core.EmuError(409, f"roleapp {entity['id']} already exists")
            body = self._store(entity)
        return core.encoded_json_response(200, body)

    def _patch(self, roleapp_id: str, request: core.EmuRequest) -> core.EmuResponse:
        body = request.json()
        with self._lock:
            entity = era_roleapps.patched(self._get(roleapp_id), body, now=self._now())
            answer = self._store(entity)
        return core.encoded_json_response(200, answer)

    def _delete(self, roleapp_id: str) -> core.EmuResponse:
        with self._lock:
            self._get(roleapp_id)
            self._storage.delete("attachments", roleapp_id)
            self._storage.delete("roleapps", roleapp_id)
            self._listings.clear()
            self._pages.forget(roleapp_id)
        return core.EmuResponse(204)

    def _lookup(self, request: core.EmuRequest) -> core.EmuResponse:
        key = request.json()
        if isinstance(key, dict) and set(key) == {"id"}:
            key = key["id"]  # the key as an object of its key fields
        if not isinstance(key, str):
            raise core.BadRequest('the LOOKUP body must be the JSON string of an id ("<id>")')
        if self._storage.get("roleapps", key) is None:
            raise core.EmuError(404, "Lookup failed")
        return core.json_response(200, [key])

    def _archive(self, roleapp_id: str, request: core.EmuRequest) -> core.EmuResponse:
        if request.method in ("GET", "HEAD"):
            self._get(roleapp_id)
            data = self._storage.get("attachments", roleapp_id)
            if data is None:
                raise core.EmuError(404, f"roleapp {roleapp_id} has no attachment")
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
            return core.EmuResponse(200, data if request.method == "GET" else b"", headers)
        with self._lock:
            entity = self._get(roleapp_id)
            if request.method == "PUT":
                info = {
                    "hasha": "md5;" + hashlib.md5(request.body).hexdigest().upper(),
                    "mtime": era_query.timestamp(self._clock(), fraction=False),
                    "size": len(request.body),
                }
                self._storage.put("attachments", roleapp_id, request.body)
            else:
                if not self._storage.delete("attachments", roleapp_id):
                    raise core.EmuError(404, f"roleapp {roleapp_id} has no attachment")
                info = None
            self._store(era_roleapps.with_attachment(entity, info, now=self._now()))
        return core.EmuResponse(204)

    # --- control --------------------------------------------------------------------------

    def _seed(self, roleapps: Any) -> list[str]:
        if not isinstance(roleapps, list):
            raise core.BadRequest("seed wants {'roleapps': [entity, ...]}")
        now = self._now()
        entities = [era_roleapps.seeded_entity(raw, now=now) for raw in roleapps]
        with self._lock:
            self._storage.put_many("roleapps", [(e["id"], e) for e in entities])
            self._listings.clear()
        return [e["id"] for e in entities]

    def _set_paging(self, payload: Mapping[str, Any]) -> dict[str, int]:
        for name in ("page_cap", "default_limit"):
            if name in payload:
                value = payload[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise core.BadRequest(f"{name} must be a positive integer")
                setattr(self, name, value)
        return {"page_cap": self.page_cap, "default_limit": self.default_limit}

    def _edit(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        roleapp_id, fields = payload.get("id"), payload.get("fields")
        if not isinstance(roleapp_id, str) or not isinstance(fields, dict):
            raise core.BadRequest("edit wants {'id': ..., 'fields': {...}}")
        with self._lock:
            entity = era_roleapps.edited(self._get(roleapp_id), fields, now=self._now())
            self._store(entity)
        return entity


def _int_param(request: core.EmuRequest, name: str, default: int) -> int:
    text = request.param(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise core.BadRequest(f"{name} must be an integer, not {text!r}") from None
    if value < 0:
        raise core.BadRequest(f"{name} must not be negative")
    return value
