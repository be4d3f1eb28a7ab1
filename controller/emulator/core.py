"""The contract between the emulator's HTTP server and the emulated APIs, and what they share.

``server.py`` turns each HTTP request into an :class:`EmuRequest`, hands it to the API mounted
at the request's first path segment, and writes back the :class:`EmuResponse`. Each API module
(``era.py``, ``element.py``, ``vcda.py``, ``commvault.py``) implements :class:`EmulatedApi`
and reuses the pieces here instead of re-writing them:

- :class:`EmuError` / :class:`BadRequest` — raise from ``handle``; the server answers it in
  the API's own error shape through the API's optional ``error_response(status, message)``.
- :class:`FaultRules` — the ``fail`` and ``drop_after_work`` control rules (method,
  ``path_regex``, ``times``), matched and counted down under a lock.
- :class:`CallStats` — the ``stats`` control action: calls per method and path template,
  and logins.
- :class:`Harness` — the three above wired together: ``harness.run(request, work, ...)``
  applies the fault rules around the API's own work and counts the call;
  ``harness.control(action, payload)`` answers the common control actions.

Typical API module::

    class XxxApi:
        mount = "xxx"

        def __init__(self, storage, *, clock=time.time):
            self._harness = core.Harness()

        def handle(self, request):
            return self._harness.run(request, self._dispatch, error_response=self.error_response)

        def control(self, action, payload):
            if action == "reset": ...
            return self._harness.control(action, payload)   # fail, drop_after_work, stats
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, overload

__all__ = [
    "BadRequest",
    "CallStats",
    "DropConnection",
    "EmuError",
    "EmuRequest",
    "EmuResponse",
    "EmulatedApi",
    "FaultRule",
    "FaultRules",
    "Harness",
    "RequestHeaders",
    "encode_json",
    "encoded_json_response",
    "json_response",
    "json_text",
    "path_template",
]


class EmuError(Exception):
    """An API answer other than success, raised from deep inside ``handle``.

    The server (or :meth:`Harness.run`) turns it into the API's own error body.
    """

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})  # e.g. ``Allow`` on a 405

    def response(self, error_response: ErrorResponder) -> EmuResponse:
        """This error in an API's own shape, with its extra headers."""
        answer = error_response(self.status, self.message)
        answer.headers.update(self.headers)
        return answer


class BadRequest(EmuError):
    """400: the request is malformed (invalid JSON, a field of the wrong type, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class DropConnection(Exception):
    """Raised from ``handle`` after the work is done: close the socket without answering."""


class RequestHeaders(Protocol):
    """What an API reads of a request's headers: ``get``, case-insensitive, the first of
    repeated names. The server's ``framing.Headers`` and ``email.message.Message`` (its
    fallback for odd header blocks) both answer it, and so does a test's plain dict.
    """

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, default: str, /) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class EmuRequest:
    """One API call, with the path below the API's mount ("/rest/v1/domain/roleapps")."""

    method: str  # upper case, includes custom methods such as LOOKUP
    path: str
    query: dict[str, list[str]]  # urllib.parse.parse_qs of the query string
    headers: RequestHeaders
    body: bytes
    client: str = "127.0.0.1"  # the peer's IP address: Era bans by IP

    def json(self) -> Any:
        """The body parsed as JSON; :class:`BadRequest` when it is not JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None

    def param(self, name: str) -> str | None:
        """The first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclasses.dataclass(slots=True)
class EmuResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


# One encoder for every answer: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_text(payload: Any) -> str:
    """Compact JSON text; non-ASCII text (Cyrillic titles) is kept as is, not escaped."""
    return _ENCODER.encode(payload)


def encode_json(payload: Any) -> bytes:
    """:func:`json_text` as UTF-8: what every JSON answer sends."""
    return _ENCODER.encode(payload).encode("utf-8")


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> EmuResponse:
    """A JSON answer (see :func:`encode_json`)."""
    return encoded_json_response(status, encode_json(payload), headers)


def encoded_json_response(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> EmuResponse:
    """A JSON answer whose body is already encoded (Era's pages of cached fragments)."""
    all_headers = {"Content-Type": "application/json; charset=utf-8"}
    if headers:
        all_headers.update(headers)
    return EmuResponse(status, body, all_headers)


class EmulatedApi(Protocol):
    # A read-only property, not a plain attribute: the APIs set ``mount`` on the class.
    @property
    def mount(self) -> str:
        """The first path segment the API is served under: "era", "element", "vcda", ..."""

    def handle(self, request: EmuRequest) -> EmuResponse: ...

    def control(self, action: str, payload: dict[str, Any]) -> Any: ...

    def credentials(self) -> dict[str, str]: ...


ErrorResponder = Callable[[int, str], EmuResponse]


def generic_error(status: int, message: str) -> EmuResponse:
    """The fallback error body for an API that has no ``error_response`` of its own."""
    return json_response(status, {"error": message, "status": status})


# --- fault rules -------------------------------------------------------------------------

FAULT_KINDS = ("fail", "drop_after_work")


@dataclasses.dataclass(slots=True)
class FaultRule:
    """One ``fail`` or ``drop_after_work`` rule; ``times`` counts down to 0, then it is gone."""

    method: str  # upper case, or "*" for any
    path_regex: re.Pattern[str]
    times: int
    status: int = 500
    body: Any = None  # for ``fail``: the JSON body to answer; None means the API's error shape

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and self.path_regex.search(path) is not None

    def response(self, error_response: ErrorResponder) -> EmuResponse:
        """The answer of a ``fail`` rule."""
        if self.body is None:
            return error_response(self.status, "injected failure")
        return json_response(self.status, self.body)


class FaultRules:
    """The armed ``fail`` / ``drop_after_work`` rules of one API; thread-safe.

    Rules are tried in the order they were added; the first match is used up once per call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, list[FaultRule]] = {kind: [] for kind in FAULT_KINDS}

    def add(self, kind: str, rule: Mapping[str, Any]) -> FaultRule:
        """Arm a rule from its control payload; :class:`BadRequest` when the payload is bad."""
        if kind not in FAULT_KINDS:
            raise BadRequest(f"unknown fault kind {kind!r}")
        try:
            parsed = FaultRule(
                method=str(rule.get("method") or "*").upper(),
                path_regex=re.compile(str(rule.get("path_regex") or "")),
                times=int(rule.get("times", 1)),
                status=int(rule.get("status", 500)),
                body=rule.get("body"),
            )
        except (re.error, TypeError, ValueError) as exc:
            raise BadRequest(f"bad {kind} rule: {exc}") from None
        if parsed.times < 1:
            raise BadRequest(f"bad {kind} rule: times must be at least 1")
        with self._lock:
            self._rules[kind].append(parsed)
        return parsed

    def take(self, kind: str, method: str, path: str) -> FaultRule | None:
        """The first rule of ``kind`` matching the call, with one use consumed; else None."""
        with self._lock:
            rules = self._rules[kind]
            for index, rule in enumerate(rules):
                if rule.matches(method, path):
                    rule.times -= 1
                    if rule.times <= 0:
                        del rules[index]
                    return rule
        return None

    def pending(self) -> dict[str, int]:
        """How many armed uses are left per kind (for ``stats``)."""
        with self._lock:
            return {kind: sum(r.times for r in rules) for kind, rules in self._rules.items()}

    def clear(self) -> None:
        with self._lock:
            for rules in self._rules.values():
                rules.clear()


# --- call statistics ---------------------------------------------------------------------

# A path segment that is an identifier rather than a resource name: a UUID, a number, a long
# hex string. Collapsing them keeps the ``stats`` keys few and stable ("GET /x/{id}").
_ID_SEGMENT = re.compile(
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\d+|[0-9a-fA-F]{16,})$"
)


def path_template(path: str) -> str:
    """``/rest/v1/domain/roleapps/68f9...`` → ``/rest/v1/domain/roleapps/{id}``."""
    return "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))


class CallStats:
    """Counts for the ``stats`` control action; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: collections.Counter[str] = collections.Counter()
        self._logins = 0
        self._failed_logins = 0

    def record_call(self, method: str, template: str) -> None:
        with self._lock:
            self._calls[f"{method} {template}"] += 1

    def record_login(self, *, ok: bool = True) -> None:
        with self._lock:
            if ok:
                self._logins += 1
            else:
                self._failed_logins += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"calls": {"GET /x/{id}": 3, ...}, "total": n, "logins": n, "failed_logins": n}``."""
        with self._lock:
            return {
                "calls": dict(sorted(self._calls.items())),
                "total": sum(self._calls.values()),
                "logins": self._logins,
                "failed_logins": self._failed_logins,
            }

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._logins = 0
            self._failed_logins = 0


# --- the two wired together --------------------------------------------------------------


class Harness:
    """Fault rules and statistics around one API's own work (see the module docstring)."""

    def __init__(self, *, template: Callable[[str], str] = path_template) -> None:
        self.faults = FaultRules()
        self.stats = CallStats()
        self._template = template

    def run(
        self,
        request: EmuRequest,
        work: Callable[[EmuRequest], EmuResponse],
        *,
        error_response: ErrorResponder = generic_error,
    ) -> EmuResponse:
        """Count the call, answer an armed ``fail`` rule, else do the work.

        :class:`EmuError` from ``work`` becomes ``error_response(status, message)``. When a
        ``drop_after_work`` rule matches, the work is done (and persisted) first, then
        :class:`DropConnection` tells the server to close the socket unanswered.
        """
        self.stats.record_call(request.method, self._template(request.path))
        failing = self.faults.take("fail", request.method, request.path)
        if failing is not None:
            return failing.response(error_response)
        try:
            response = work(request)
        except EmuError as exc:
            response = exc.response(error_response)
        if self.faults.take("drop_after_work", request.method, request.path) is not None:
            raise DropConnection()
        return response

    def control(self, action: str, payload: Mapping[str, Any]) -> Any:
        """The control actions every API shares: ``fail``, ``drop_after_work``, ``stats``."""
        if action in FAULT_KINDS:
            rule = self.faults.add(action, payload)
            return {"armed": action, "times": rule.times}
        if action == "stats":
            return {**self.stats.snapshot(), "faults_pending": self.faults.pending()}
        raise EmuError(404, f"unknown control action {action!r}")

    def reset(self) -> None:
        """Disarm every fault rule and zero the counters (part of an API's ``reset``)."""
        self.faults.clear()
        self.stats.reset()
