"""The floor of a scenario: its HTTP calls made by the leanest client we could write.

Used by ``run.py`` beside each Era scenario. Why: the bound (round trips x latency) counts
no server CPU, yet on the benchmark machine the emulator shares its 2 cores with converge
and spends about half a millisecond of CPU on each request, so no client at all reaches the
bound there. The floor measures what the machine and the server allow instead: the same
calls against the same emulator in the same state, as many at once, from one thread with
non-blocking sockets and every body serialised before the clock starts (~0.06 ms of client
CPU per call). converge's wall time over the floor is then what converge itself costs.

It is not a client to use: it knows the answer's size, follows no redirect, retries nothing,
and stops the benchmark on any answer that is not a success.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import selectors
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from controller.clients.era import LOGOUT, ROLEAPPS, SESSIONS
from controller.fetching import PAGE_SIZE, ROLEAPP_FIELDS

MAX_HEAD = 64 * 1024
TIMEOUT = 60.0  # seconds without any answer before the floor gives up


class FloorError(Exception):
    """An answer the floor cannot use: the benchmark stops rather than measure errors."""


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str  # below the API's base path, with its query
    body: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class Phase:
    """Calls made ``concurrency`` at a time; a phase starts when the one before has ended."""

    calls: tuple[Call, ...]
    concurrency: int = 1


def era_phases(
    *, pages: int, page_concurrency: int, writes: Sequence[Call], write_concurrency: int
) -> list[Phase]:
    """An Era scenario as converge's bound lays it out: login, the first page, the other
    ``pages`` and the empty one that ends the listing, the writes, logout."""
    query = {"limit": PAGE_SIZE, "mask": ",".join(dict.fromkeys(["id", *ROLEAPP_FIELDS]))}

    def page(offset: int) -> Call:
        return Call("GET", f"{ROLEAPPS}?{urlencode({**query, 'offset': offset})}")

    rest = tuple(page(PAGE_SIZE * n) for n in range(1, pages + 1)) if pages else ()
    phases = [Phase((page(0),))]
    if rest:
        phases.append(Phase(rest, page_concurrency))
    if writes:
        phases.append(Phase(tuple(writes), write_concurrency))
    phases.append(Phase((Call("DELETE", LOGOUT),)))
    return phases


def create(entity: dict[str, Any]) -> Call:
    return Call("POST", ROLEAPPS, json.dumps(entity).encode())


def update(roleapp_id: str, changes: dict[str, Any]) -> Call:
    return Call("PATCH", f"{ROLEAPPS}/{roleapp_id}", json.dumps(changes).encode())


def era_floor(base_url: str, credentials: dict[str, str], phases: Iterable[Phase]) -> float:
    """Wall seconds to log in to the Era at ``base_url`` and make every call of ``phases``."""
    phases = list(phases)
    login = json.dumps({**credentials, "session_type": "api"}).encode()
    started = time.perf_counter()
    with _Wire(base_url, max(p.concurrency for p in phases)) as wire:
        (answer,) = wire.run(Phase((Call("POST", SESSIONS, login),)), {})
        token = json.loads(answer)["session_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for phase in phases:
            wire.run(phase, headers)
    return time.perf_counter() - started


class _Wire:
    """Keep-alive connections to one origin, answers read by Content-Length."""

    def __init__(self, base_url: str, size: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise FloorError(f"the floor speaks plain http to host:port only, not {base_url}")
        self._address = (parts.hostname, parts.port)
        self._base = parts.path.rstrip("/")
        self._host = f"Host: {parts.hostname}:{parts.port}\r\n".encode()
        self._size = size
        self._sockets: list[socket.socket] = []
        self._selector = selectors.DefaultSelector()

    def __enter__(self) -> _Wire:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._selector.close()
        for sock in self._sockets:
            sock.close()

    def _socket(self, index: int) -> socket.socket:
        while len(self._sockets) <= index:
            sock = socket.create_connection(self._address, timeout=TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets.append(sock)
        return self._sockets[index]

    def _request(self, call: Call, headers: bytes) -> bytes:
        head = f"{call.method} {self._base}{call.path} HTTP/1.1\r\n".encode() + self._host
        if call.body:
            head += b"Content-Type: application/json\r\n"
        return head + headers + b"Content-Length: %d\r\n\r\n" % len(call.body) + call.body

    def run(self, phase: Phase, headers: dict[str, str]) -> list[bytes]:
        """The bodies of the phase's answers, in the order its calls finished."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        waiting = collections.deque(self._request(c, extra) for c in phase.calls)
        bodies: list[bytes] = []
        for index in range(min(phase.concurrency, len(waiting))):
            sock = self._socket(index)
            sock.sendall(waiting.popleft())
            self._selector.register(sock, selectors.EVENT_READ, bytearray())
        while len(bodies) < len(phase.calls):
            ready = self._selector.select(timeout=TIMEOUT)
            if not ready:
                raise FloorError(f"no answer in {TIMEOUT:g} s")
            for key, _ in ready:
                ready_sock, buffer = key.fileobj, key.data
                assert isinstance(ready_sock, socket.socket)
                chunk = ready_sock.recv(1 << 16)
                if not chunk:
                    raise FloorError("the server closed a connection")
                buffer += chunk
                body = _answer(buffer)
                if body is None:
                    continue
                bodies.append(body)
                if waiting:
                    ready_sock.sendall(waiting.popleft())
                else:
                    self._selector.unregister(ready_sock)
        return bodies


def _answer(buffer: bytearray) -> bytes | None:
    """The body of the answer at the start of ``buffer`` (then removed), None if partial."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise FloorError("an answer's head is too long")
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = head[0].split(" ", 2)
    length = None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise FloorError("an answer without Content-Length")
    if len(buffer) < end + 4 + length:
        return None
    body = bytes(buffer[end + 4 : end + 4 + length])
    del buffer[: end + 4 + length]
    if not status[1].startswith("2"):
        raise FloorError(f"{head[0]}: {body[:200]!r}")
    return body
