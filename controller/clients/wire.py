"""What a session hands the network and gets back, whichever wire carries it.

A wire takes a :class:`Request` (method, target, headers, body: bytes ready to send, built
by :class:`Endpoint` exactly as httpx built them before) and gives back an
:data:`Answer` or raises a :class:`Failure` that says whether the server may have seen the
request. Two wires implement :class:`Wire`: ``lanes.Lanes``, plain sockets (the default:
see its module for why httpx is no longer on this path), and
``transports.TransportWire``, an injected httpx transport (the tests' fake servers).
``controller.clients.http`` is their only user; it builds the requests and holds the
session logic (login, retries, errors) above both, so that logic is the same for both.
"""

from __future__ import annotations

import dataclasses
import json as jsonlib
import re
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

from controller import __version__

# What we keep of an error answer's body: enough for any server message, and a bound on
# memory when a proxy answers with a multi-megabyte HTML page.
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = f"converge/{__version__}"

Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers as received, body decoded
# What a caller of the many-at-once sends (``send_many``, ``write_many``) tells them apart by.
K = TypeVar("K")


class Wire(Protocol):
    def send(self, request: Request) -> Answer:
        """One exchange; an error answer's body (status >= 400) read to MAX_ERROR_BODY."""
        ...

    def close(self) -> None: ...


# -- failures ------------------------------------------------------------------------


class Failure(Exception):
    """A transport failure, classified: ``sent`` is False when the server never saw it.

    ``kind`` is httpx's name for it (``ConnectError``, ``ReadTimeout``, ...) whichever
    wire failed, so messages and debug logs read the same. Messages never hold a header
    value, a body or a query string.
    """

    def __init__(self, message: str, *, kind: str, sent: bool, permanent: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.sent = sent
        self.permanent = permanent


def cannot_connect(kind: str, detail: object) -> Failure:
    return Failure(f"cannot connect ({kind}: {_said(detail)})", kind=kind, sent=False)


def no_answer_in_time(kind: str) -> Failure:
    message = f"no answer in time ({kind}); the request may have been applied"
    return Failure(message, kind=kind, sent=True)


def connection_lost(kind: str, detail: object) -> Failure:
    message = (
        f"connection lost before the answer ({kind}: {_said(detail)}); "
        "the request may have been applied"
    )
    return Failure(message, kind=kind, sent=True)


def not_trusted(detail: object) -> Failure:
    message = f"TLS certificate not trusted: {detail}"
    return Failure(message, kind="ConnectError", sent=False, permanent=True)


def _said(detail: object) -> str:
    return str(detail) or "no detail"


def unusable(kind: str, detail: object) -> Failure:
    """A request that can never work as it is (a bad URL, a bad header): not retried."""
    return Failure(f"{kind}: {detail}", kind=kind, sent=False, permanent=True)


# -- requests ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # origin-form: the percent-encoded path and query
    headers: tuple[tuple[str, str], ...]  # as sent: Host and Content-Length included
    body: bytes


# httpx's path percent-encode set (WHATWG's): printable ASCII stays but for these; "%"
# stays too, so a client's own %XX escapes are kept as they are.
_PATH_UNSAFE = re.compile("[^\x21\x24-\x3b\x3d\x40-\x5f\x61-\x7a\x7c\x7e]")
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")  # no CR, LF, NUL, controls (as h11)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # httpx sends Content-Length: 0 for these


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8"))


def _normalize(path: str) -> str:
    """Drop "." and ".." segments, as httpx does (RFC 3986 5.2.4)."""
    if "." not in path:
        return path
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept and kept != [""]:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    return "/".join(kept)


def query(params: Mapping[str, Any]) -> str:
    """``params`` as httpx encodes them: true/false for bools, "" for None, lists repeated."""
    items: list[tuple[str, str]] = []
    for key, value in params.items():
        for one in value if isinstance(value, list | tuple) else (value,):
            text = (
                "true" if one is True else "false" if one is False else "" if one is None else one
            )
            items.append((str(key), str(text)))
    return urlencode(items)


def encode_body(json: Any, content: bytes | None) -> tuple[bytes, str | None]:
    """(body, its content type): as httpx encodes ``content=`` (first) or ``json=``."""
    if content is not None:
        return content, None
    if json is None:
        return b"", None
    text = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8"), "application/json"


def _ascii_host(host: str) -> str:
    """An internationalised host name in its ASCII form (``пример.рф`` → ``xn--e1afmkfd.xn--p1ai``).

    As httpx sends it: the Host header is written in Latin-1 and the resolver and TLS take
    ASCII. A name the idna codec refuses stays as it is; connecting words the refusal.
    """
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


class Endpoint:
    """A base URL, parsed once: where to connect, and how to build each request to it."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme.lower()
        self.host = _ascii_host(parts.hostname or "")
        self.problem: str | None = None  # why no request can be sent; told at the first
        try:
            port = parts.port
        except ValueError as exc:
            port, self.problem = None, f"invalid port in the base URL ({exc})"
        default_port = {"http": 80, "https": 443}.get(self.scheme)
        if default_port is None:
            self.problem = "the base URL must start with http:// or https://"
        elif not self.host:
            self.problem = "the base URL has no host"
        self.port = port or default_port or 0
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.netloc = host if self.port == default_port else f"{host}:{self.port}"
        self.origin = f"{self.scheme}://{self.netloc}"
        self._prefix = parts.path.rstrip("/")
        self._defaults: dict[str, tuple[str, str]] = {}
        for name, value in (headers or {}).items():
            if not TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise ValueError(f"invalid session header {name!r}")
        fixed = {
            "Host": self.netloc,
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
            "User-Agent": USER_AGENT,
        }
        for name, value in {**fixed, **(headers or {})}.items():
            self._defaults[name.lower()] = (name, value)

    def target(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """``path`` below the base URL, percent-encoded as httpx does, with ``params``."""
        joined = _normalize(f"{self._prefix}/{path.lstrip('/')}")
        target = _PATH_UNSAFE.sub(_percent, joined)
        encoded = query(params) if params else ""
        return f"{target}?{encoded}" if encoded else target

    def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str],
    ) -> Request:
        """The headers merged as httpx merges them: the call's over the session's over ours."""
        merged = dict(self._defaults)
        for name, value in headers.items():
            if not TOKEN.fullmatch(name):
                raise unusable("LocalProtocolError", "a header name that is not a token")
            if _BAD_VALUE.search(value):
                raise unusable("LocalProtocolError", f"a character not allowed in header {name}")
            merged[name.lower()] = (name, value)
        merged.pop("transfer-encoding", None)  # the body is sent whole, with its length
        if content_type is not None and "content-type" not in merged:
            merged["content-type"] = ("Content-Type", content_type)
        if body or method in _BODY_METHODS:
            merged["content-length"] = ("Content-Length", str(len(body)))
        else:
            merged.pop("content-length", None)
        return Request(method, target, tuple(merged.values()), body)
