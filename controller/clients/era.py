"""The Era REST API v1, as far as roleapps go: list, read, create, update, delete, archive.

Called by fetching (``list_roleapps``) and applying (the writes). Built on
``controller.clients.http``: the session brings login, retries and error mapping; this
module adds Era's dialect — its login, its error shape, offset paging under a server-side
cap, and a create that is safe to repeat because it carries a client-chosen ``id``.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from controller import errors
from controller.clients import http
from controller.clients.wire import K

if TYPE_CHECKING:
    from controller.manifests import Connection

SESSIONS = "/rest/v1/iam/sessions"
LOGOUT = "/rest/v1/iam/sessions/current"
ROLEAPPS = "/rest/v1/domain/roleapps"

DELETED = (200, 204, 404)  # a delete is done when the roleapp is gone, whoever removed it
# A create whose answer was lost is checked (LOOKUP) and repeated at most this often.
CREATE_ROUNDS = 3
# Every loop is bounded: no real listing has 100,000 pages.
MAX_PAGES = 100_000


def error_message(response: http.HttpResponse) -> str:
    """Era's errors are ``{"error_code": 1400, "error_message": "..."}``."""
    try:
        payload = response.json()
    except errors.PermanentApiError:
        return http.default_error_message(response)
    if isinstance(payload, dict) and payload.get("error_message"):
        return str(payload["error_message"])
    return http.default_error_message(response)


class EraAuthenticator:
    """``POST /rest/v1/iam/sessions`` with ``session_type: api`` → a Bearer token."""

    def __init__(self, auth: Mapping[str, str]) -> None:
        missing = [key for key in ("domain", "login", "password") if not auth.get(key)]
        if missing:
            raise ValueError(f"era auth needs {', '.join(missing)}")
        self._auth = dict(auth)

    def login(self, session: http.HttpSession) -> Mapping[str, str]:
        body = {
            "domain": self._auth["domain"],
            "login": self._auth["login"],
            "pwd": self._auth["password"],
            "session_type": "api",
        }
        # 401/403 here become AuthError in the session and are never retried.
        # idempotent: a lost login answer leaves at most an idle session (the oldest is evicted
        # past 10), so repeating it is safe; a refusal (401/403) is never repeated all the same.
        response = session.request(
            "POST", SESSIONS, json=body, authenticated=False, ok=(200, 201), idempotent=True
        )
        payload = response.json()
        token = payload.get("session_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise errors.PermanentApiError(
                "the login answer carries no session_token",
                connection=session.connection,
                method="POST",
                path=SESSIONS,
                status=response.status,
            )
        return {"Authorization": f"Bearer {token}"}

    def logout(self, session: http.HttpSession, headers: Mapping[str, str]) -> None:
        session.request(
            "DELETE", LOGOUT, headers=headers, authenticated=False, ok=(200, 204, 401, 404)
        )

    def is_expired(self, response: http.HttpResponse) -> bool:
        return response.status == 401


class EraClient:
    """Roleapps of one Era connection. Thread-safe: share one per connection and run."""

    def __init__(self, session: http.HttpSession) -> None:
        self.session = session

    @classmethod
    def connect(
        cls, settings: http.HttpSettings, auth: Mapping[str, str], **session_kwargs: Any
    ) -> EraClient:
        """A client with its own session, logging in with ``auth`` (domain/login/password)."""
        secrets = [auth.get("password", ""), *session_kwargs.pop("secrets", ())]
        session = http.HttpSession(
            settings,
            authenticator=EraAuthenticator(auth),
            secrets=secrets,
            error_message=error_message,
            **session_kwargs,
        )
        return cls(session)

    @classmethod
    def from_connection(
        cls, connection: Connection, *, base_url: str | None = None, **session_kwargs: Any
    ) -> EraClient:
        """A client for a Connection manifest (``base_url`` resolves ``url: sandbox``)."""
        settings = http.HttpSettings.from_connection(connection, base_url=base_url)
        return cls.connect(settings, connection.auth, **session_kwargs)

    @property
    def connection(self) -> str:
        return self.session.connection

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> EraClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------

    def list_roleapps(
        self, *, fields: Sequence[str] | None = None, page_size: int = 500
    ) -> list[dict[str, Any]]:
        """Every roleapp, each once (by ``id``), in listing order.

        Pages are fetched ``concurrency`` at a time. The server may cap ``limit``, so the
        stride is learnt from the first page, and a page shorter than the stride (a
        different cap, or the data moved) restarts the next window right after it: the
        covered offsets stay contiguous, and only an empty page at the frontier ends it.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        params: dict[str, Any] = {"limit": page_size}
        if fields is not None:
            params["mask"] = ",".join(dict.fromkeys(["id", *fields]))  # id: to deduplicate
        first = self._page(0, params)
        found: dict[str, dict[str, Any]] = {}
        unnamed: list[dict[str, Any]] = []
        _collect(first, found, unnamed)
        if not first:
            return []
        stride = len(first)
        cursor = len(first)  # everything below this offset has been read
        # A first page shorter than asked is a cap or the whole listing: one probe tells
        # which, instead of a window of requests that would mostly come back empty.
        window = self.session.settings.concurrency if stride >= page_size else 1
        pages = 1
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=window, thread_name_prefix=f"era-{self.connection}"
        ) as pool:
            while pages < MAX_PAGES:
                offsets = [cursor + i * stride for i in range(window)]
                results = list(pool.map(lambda o: self._page(o, params), offsets))
                pages += len(offsets)
                for offset, page in zip(offsets, results, strict=True):
                    if offset > cursor:
                        break  # a short page left a gap: read on from the true cursor
                    if not page:
                        return [*found.values(), *unnamed]
                    _collect(page, found, unnamed)
                    cursor = max(cursor, offset + len(page))
                else:
                    window = self.session.settings.concurrency
                    continue
                window = 1  # after a short page, probe once before fanning out again
        raise errors.PermanentApiError(
            f"the listing did not end after {MAX_PAGES} pages",
            connection=self.connection,
            method="GET",
            path=ROLEAPPS,
        )

    def get(self, roleapp_id: str) -> dict[str, Any] | None:
        response = self.session.request("GET", _item(roleapp_id), ok=(200, 404))
        if response.status == 404:
            return None
        return self._object(response)

    def lookup(self, roleapp_id: str) -> bool:
        """Whether a roleapp with this id exists (Era's ``LOOKUP``, the cheapest check)."""
        response = self.session.request("LOOKUP", ROLEAPPS, json=roleapp_id, ok=(200, 404))
        if response.status == 404:
            return False
        found = response.json()
        return roleapp_id in found if isinstance(found, list) else bool(found)

    # -- writes ----------------------------------------------------------------------

    def create(
        self, entity: Mapping[str, Any], *, first: http.FirstAttempt | None = None
    ) -> dict[str, Any]:
        """Create a roleapp; never makes a duplicate.

        The entity carries a client-chosen ``id``, so when an answer is lost (the server
        may have created it) or the id already exists (an earlier lost answer), the id is
        looked up and the existing object returned; the create is repeated only when the
        lookup says it is not there. ``first``: its first attempt, made by ``write_many``.
        """
        roleapp_id = entity.get("id")
        if not roleapp_id:
            # Without an id a lost answer cannot be told from a failure: send once.
            return self._object(
                self.session.request("POST", ROLEAPPS, json=dict(entity), first=first)
            )
        last: errors.ApiError | None = None
        for _ in range(CREATE_ROUNDS):
            try:
                attempt, first = first, None  # only the first round's first attempt
                response = self.session.request("POST", ROLEAPPS, json=dict(entity), first=attempt)
                return self._object(response)
            except errors.TransientApiError as exc:
                if not exc.maybe_applied:
                    raise  # nothing was done and the session already spent its retries
                last = exc
            except errors.PermanentApiError as exc:
                if exc.status != 409:
                    raise
                last = exc
            existing = self.get(str(roleapp_id)) if self.lookup(str(roleapp_id)) else None
            if existing is not None:
                return existing
            if isinstance(last, errors.PermanentApiError):
                raise last  # 409 yet not there: a conflict we cannot resolve by repeating
        assert last is not None
        raise last

    def update(
        self,
        roleapp_id: str,
        changes: Mapping[str, Any],
        *,
        first: http.FirstAttempt | None = None,
    ) -> dict[str, Any]:
        # Era's PATCH sets the given fields to the given values: repeating it is harmless.
        response = self.session.request(
            "PATCH", _item(roleapp_id), json=dict(changes), idempotent=True, first=first
        )
        return self._object(response)

    def delete(self, roleapp_id: str, *, first: http.FirstAttempt | None = None) -> None:
        """Delete a roleapp; one that is already gone is fine."""
        self.session.request("DELETE", _item(roleapp_id), ok=DELETED, first=first)

    def upload_archive(self, roleapp_id: str, data: bytes) -> None:
        self.session.request(
            "PUT",
            f"{_item(roleapp_id)}/attachment",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            ok=(200, 201, 204),
        )

    # -- many writes at once -----------------------------------------------------------

    @property
    def can_write_many(self) -> bool:
        return self.session.can_send_many

    def write_many(
        self,
        writes: Iterable[tuple[K, RoleappWrite]],
        done: Callable[[K], None],
        left: Callable[[K, http.FirstAttempt], None],
        *,
        most: int | None = None,
    ) -> None:
        """Make each write once, up to ``most`` at a time from this thread (see
        ``HttpSession.send_many``); ``done`` gets those done.

        ``left`` gets every write that was sent but not plainly done (see
        ``HttpSession.send_many``), with its first attempt: the caller finishes it with
        ``create``, ``update`` or ``delete`` given ``first=``, which carry on from that
        attempt exactly as if they had made it. A write that gets neither was never sent,
        unless this raises (a callback did, or Ctrl-C): those under way are then unknown.
        """

        def answered(key: K, response: http.HttpResponse) -> None:
            if response.method == "DELETE" or _is_object(response):
                done(key)
            else:  # create and update would raise on it: theirs to say so
                left(key, http.FirstAttempt(response, 0))

        calls = ((key, write.call) for key, write in writes)
        self.session.send_many(calls, answered, left, most=most)

    # -- helpers ---------------------------------------------------------------------

    def _page(self, offset: int, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        response = self.session.request("GET", ROLEAPPS, params={**params, "offset": offset})
        payload = response.json()
        if not isinstance(payload, list) or not all(isinstance(o, dict) for o in payload):
            raise errors.PermanentApiError(
                f"expected a JSON array of objects, got {type(payload).__name__}",
                connection=self.connection,
                method="GET",
                path=ROLEAPPS,
                status=response.status,
            )
        return payload

    def _object(self, response: http.HttpResponse) -> dict[str, Any]:
        payload = response.json()
        if not isinstance(payload, dict):
            raise errors.PermanentApiError(
                f"expected a JSON object, got {type(payload).__name__}",
                connection=self.connection,
                method=response.method,
                path=response.path,
                status=response.status,
            )
        return payload


class RoleappWrite:
    """A create, update or delete for ``write_many``, made by one of its constructors."""

    __slots__ = ("call",)

    def __init__(self, call: http.Call) -> None:
        self.call = call

    @classmethod
    def create(cls, entity: Mapping[str, Any]) -> RoleappWrite:
        if not entity.get("id"):
            raise ValueError("only a create with an id is safe to repeat")
        return cls(http.Call("POST", ROLEAPPS, dict(entity)))

    @classmethod
    def update(cls, roleapp_id: str, changes: Mapping[str, Any]) -> RoleappWrite:
        return cls(http.Call("PATCH", _item(roleapp_id), dict(changes)))

    @classmethod
    def delete(cls, roleapp_id: str) -> RoleappWrite:
        return cls(http.Call("DELETE", _item(roleapp_id), ok=DELETED))


def _is_object(response: http.HttpResponse) -> bool:
    """What ``create`` and ``update`` take as done: an answer that is a JSON object."""
    try:
        return isinstance(response.json(), dict)
    except errors.ApiError:
        return False


def _item(roleapp_id: str) -> str:
    # Quote everything: an id is data, never a path of its own.
    return f"{ROLEAPPS}/{quote(roleapp_id, safe='')}"


def _collect(
    page: list[dict[str, Any]], found: dict[str, dict[str, Any]], unnamed: list[dict[str, Any]]
) -> None:
    # Objects can shift between pages while the listing runs: the same id twice is one.
    for obj in page:
        key = obj.get("id")
        if isinstance(key, str) and key:
            found[key] = obj
        else:
            unnamed.append(obj)
