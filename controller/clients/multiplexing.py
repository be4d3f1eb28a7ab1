"""Many exchanges at once from one thread: the lanes' connections driven by one selector.

Used by ``lanes.Lanes.send_many`` (apply's roleapp writes, through
``HttpSession.send_many``). Why: with a thread per lane, every exchange blocks its thread
and wakes it, and the GIL changes hands around each wake-up: ~4 context switches and
~0.27 ms of CPU per create on the benchmark VM (issue 7), where one thread on non-blocking
sockets spends ~0.06 ms (``benchmarks/lean_client.py``). Here one thread sends on every
free lane, waits on all of them at once, and reads each answer as it arrives.

What it leaves out, by design: retries, logins, and every address of a host name but the
first (the open lanes' own, if any; the threaded wire tries them all when a call is made
again). An exchange that fails — a connection that does not open or is lost, no answer in
time, an answer it cannot read — is told to the caller as the ``wire.Failure`` the threaded
wire would have raised, and the caller's retry logic takes it from there; its lane is
opened afresh for the next exchange if the request went, and left out of the run if the
connection would not open. After the first failure no more exchanges are started.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic

from controller.clients import wire
from controller.clients.lanes import request_bytes
from controller.clients.wire import Answer, K, Request

if TYPE_CHECKING:
    from controller.clients.lanes import _Connection

# What a non-blocking connect answers while it goes on (Windows: WSAEWOULDBLOCK). On Linux
# EAGAIN (the same number as EWOULDBLOCK) means no local port is free: an error.
_CONNECTING = (0, errno.EINPROGRESS, *([errno.EWOULDBLOCK] if os.name == "nt" else []))
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class _NeverRaised(Exception):
    """Stands in for ssl's "want read/write" errors on a plain run: ssl is not imported."""


class _Exchange(Generic[K]):
    """One request on one lane, from opening the connection (if need be) to its answer."""

    __slots__ = ("data", "deadline", "key", "method", "sent", "started", "step")

    def __init__(self, key: K, request: Request, *, timeout: float, step: str) -> None:
        self.key = key
        self.method = request.method
        self.data = memoryview(request_bytes(request))
        self.sent = 0
        self.started = time.monotonic()
        # As the threaded wire's socket timeout: for each step, and each read or write
        # that makes progress starts it again (see _Run._steps, _Run._receive).
        self.deadline = self.started + timeout
        self.step = step  # "connect", "handshake", "send", "receive"


def exchange_many(
    lanes: list[_Connection],
    items: Iterator[tuple[K, Request]],
    on_answer: Callable[[K, Answer | wire.Failure, float], None],
    *,
    timeout: float,
    another: Callable[[], _Connection | None] = lambda: None,
) -> None:
    """Send ``items`` on ``lanes``, one exchange per lane at a time, until ``items`` runs
    out (or every lane is out of use and ``another``, asked while all are busy, has none).

    An item is taken from ``items`` only when a lane is free for it, so a caller that
    stops yielding (Ctrl-C) starts nothing more, and items never taken were never sent.
    Every item taken gets its ``on_answer``, unless this raises (``on_answer`` did, or
    Ctrl-C): then those under way are closed unanswered, as an interrupted request is.
    After the first exchange that fails, no more are taken: what made it fail (a server
    going down, a proxy closing connections) would most likely fail the next ones too,
    and the threaded path meets it with backoff instead of a burst.
    Lanes are left as ``Lanes`` keeps them: blocking, with ``timeout``, idle or closed.
    """
    if not lanes:
        return
    run: _Run[K] = _Run(lanes[0], on_answer, timeout=timeout)
    try:
        run.take(lanes)
        run.drive(items, another)
    finally:
        run.finish()


class _Run(Generic[K]):
    """One ``exchange_many``: the lanes, each idle (open or shut) or busy with one exchange.

    Open lanes are watched for reading even when idle, so one the server closes at rest is
    seen (``_advance``) and opened afresh; and each is checked again just before it is
    used (``_start``): closed since, or idle past the keep-alive expiry, it is opened
    afresh, as ``Lanes`` does before each exchange.
    """

    def __init__(
        self,
        first: _Connection,
        on_answer: Callable[[K, Answer | wire.Failure, float], None],
        *,
        timeout: float,
    ) -> None:
        self._on_answer = on_answer
        self._timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._busy: dict[_Connection, _Exchange[K]] = {}
        self._open: list[_Connection] = []  # connected and idle
        self._shut: list[_Connection] = []  # opened when next used
        self._failed = False  # an exchange failed: take no more items
        self._watched: dict[_Connection, int] = {}  # the events each lane's socket is watched for
        self._address: tuple[socket.AddressFamily, tuple[Any, ...]] | None = None
        self._want_read: type[Exception] = _NeverRaised
        self._want_write: type[Exception] = _NeverRaised
        if first.context is not None:
            import ssl  # loaded already: the lanes made their TLS context with it

            self._want_read, self._want_write = ssl.SSLWantReadError, ssl.SSLWantWriteError

    def take(self, lanes: list[_Connection]) -> None:
        """The lanes this run drives: each open one non-blocking and watched, as it goes
        (inside ``exchange_many``'s try, so ``finish`` puts back whatever was done)."""
        for lane in lanes:
            sock = lane.open_socket()
            if sock is None:
                self._shut.append(lane)
                continue
            if self._address is None:
                with contextlib.suppress(OSError):
                    # New connections go where the open ones went: the address that works.
                    self._address = (sock.family, sock.getpeername())
            self._open.append(lane)
            sock.setblocking(False)
            self._watch(lane, sock, _READ)

    def drive(
        self, items: Iterator[tuple[K, Request]], another: Callable[[], _Connection | None]
    ) -> None:
        more = True
        while True:
            while more and not self._failed:
                if not (self._open or self._shut):
                    lane = another()  # every lane busy: one more, if the caller has it
                    if lane is None:
                        break
                    self.take([lane])
                item = next(items, None)
                if item is None:
                    more = False
                    break
                self._start(*item)
            if not self._busy:
                return
            wait = min(e.deadline for e in self._busy.values()) - time.monotonic()
            for key, _ in self._selector.select(max(0.0, wait)):
                self._advance(key.data)
            now = time.monotonic()
            for lane, exchange in list(self._busy.items()):
                if exchange.deadline <= now:
                    self._end(lane, _late(exchange.step))

    def finish(self) -> None:
        """Close what is still under way (its answer is lost to us); the rest rests.

        Resting is going back to blocking with the timeout; a lane's idle time starts at
        its last answer (``_receive``), not here, so one unused in this run still expires.
        """
        for lane in list(self._busy):
            self._busy.pop(lane)
            self._unwatch(lane)
            lane.close()
        self._selector.close()  # before any socket it watches is closed
        for lane in self._open:
            try:
                lane.rest(self._timeout)
            except OSError:
                lane.close()

    # -- one exchange's steps ------------------------------------------------------------

    def _start(self, key: K, request: Request) -> None:
        if self._open:
            lane = self._open.pop()
            # Asked again, as ``Lanes`` does before each exchange: the server may have
            # closed it while this thread was busy elsewhere (the selector sees that later).
            if lane.reusable():
                self._busy[lane] = _Exchange(key, request, timeout=self._timeout, step="send")
                return self._advance(lane)
            self._unwatch(lane)
            lane.close()  # and opened afresh below
        else:
            lane = self._shut.pop()
        self._busy[lane] = _Exchange(key, request, timeout=self._timeout, step="connect")
        try:
            lane.adopt(self._connect(lane))
        except OSError as exc:
            return self._end(lane, wire.cannot_connect("ConnectError", exc))
        self._advance(lane)

    def _connect(self, lane: _Connection) -> socket.socket:
        """A socket connecting without blocking: writable once connected (or refused)."""
        if self._address is None:
            endpoint = lane.endpoint
            if endpoint.problem is not None or not endpoint.host.isascii():
                raise OSError("not a usable endpoint")
            found = socket.getaddrinfo(
                endpoint.host.encode("ascii"), endpoint.port, type=socket.SOCK_STREAM
            )
            self._address = (found[0][0], found[0][4])
        family, address = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            error = sock.connect_ex(address)
            if error not in _CONNECTING:
                raise OSError(error, os.strerror(error))  # unreachable, refused at once
        except OSError:
            sock.close()
            raise
        return sock  # EINPROGRESS: connected once writable (see _steps)

    def _advance(self, lane: _Connection) -> None:
        """Take this lane's exchange as far as its socket allows now."""
        exchange = self._busy.get(lane)
        if exchange is None:
            if lane in self._open:  # readable at rest: the server closed it, or spoke unasked
                self._open.remove(lane)
                self._unwatch(lane)
                lane.close()
                self._shut.append(lane)
            return
        try:
            answer = self._steps(lane, exchange)
        except wire.Failure as failure:  # a protocol error, or one of ours below
            return self._end(lane, failure)
        except OSError as exc:  # refused, reset, not trusted: classified as ``lanes`` does
            return self._end(lane, self._classify(exchange.step, exc, lane))
        if answer is not None:  # told outside the try: an OSError of the caller's is its own
            self._on_answer(exchange.key, answer, time.monotonic() - exchange.started)

    def _steps(self, lane: _Connection, exchange: _Exchange[K]) -> Answer | None:
        """The exchange taken as far as it goes now; its answer once it has come."""
        sock = lane.current_socket
        assert sock is not None
        if exchange.step == "connect":
            if lane not in self._watched:
                self._watch(lane, sock, _WRITE)  # connected once writable
                return None
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise wire.cannot_connect("ConnectError", os.strerror(error))
            exchange.deadline = time.monotonic() + self._timeout
            context = lane.context
            if context is None:
                exchange.step = "send"
            else:
                self._unwatch(lane)  # the TLS socket that wraps it is watched instead
                sock = context.wrap_socket(
                    sock,
                    server_hostname=lane.endpoint.host.encode("ascii"),
                    do_handshake_on_connect=False,
                )
                lane.adopt(sock)
                exchange.step = "handshake"
        if exchange.step == "handshake":
            try:
                sock.do_handshake()  # type: ignore[attr-defined]  # an SSLSocket here
            except self._want_read:
                self._watch(lane, sock, _READ)
                return None
            except self._want_write:
                self._watch(lane, sock, _WRITE)
                return None
            exchange.deadline = time.monotonic() + self._timeout
            exchange.step = "send"
        if exchange.step == "send":
            data = exchange.data
            while exchange.sent < len(data):
                try:
                    exchange.sent += sock.send(data[exchange.sent :])
                except (BlockingIOError, self._want_write):
                    self._watch(lane, sock, _WRITE)
                    return None
                except self._want_read:
                    self._watch(lane, sock, _READ)
                    return None
                exchange.deadline = time.monotonic() + self._timeout
            exchange.step = "receive"
            self._watch(lane, sock, _READ)
            return None
        return self._receive(lane, sock, exchange)

    def _receive(
        self, lane: _Connection, sock: socket.socket, exchange: _Exchange[K]
    ) -> Answer | None:
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, self._want_read):
                return None  # the rest comes with the next readable event
            if not data:  # closed: the end of an answer read to the close, or an error
                answer = lane.buffered_answer(exchange.method, closed=True)
                break
            exchange.deadline = time.monotonic() + self._timeout
            lane.feed(data)
            answer = lane.buffered_answer(exchange.method)
            if answer is not None:
                break
        assert answer is not None  # closed=True reads an answer or raises
        status, headers, body, keep = answer
        del self._busy[lane]
        if keep and not lane.has_buffered:
            lane.idle_from_now()
            self._open.append(lane)  # still watched for reading: see _advance
        else:  # the server closes it, or sent more than the answer: not sane to reuse
            self._unwatch(lane)
            lane.close()
            self._shut.append(lane)
        return status, headers, body

    # -- bookkeeping ---------------------------------------------------------------------

    def _watch(self, lane: _Connection, sock: socket.socket, events: int) -> None:
        """Wait for ``events`` on the lane's socket (kept registered while the lane is open)."""
        watched = self._watched.get(lane)
        if watched == events:
            return
        if watched is None:
            self._selector.register(sock, events, lane)
        else:
            self._selector.modify(sock, events, lane)
        self._watched[lane] = events

    def _unwatch(self, lane: _Connection) -> None:
        if self._watched.pop(lane, None) is not None:
            sock = lane.current_socket
            assert sock is not None
            self._selector.unregister(sock)

    def _classify(self, step: str, exc: OSError, lane: _Connection) -> wire.Failure:
        if step in ("connect", "handshake"):
            if lane.context is not None and _untrusted(exc):
                return wire.not_trusted(exc)
            return wire.cannot_connect("ConnectError", exc)
        return wire.connection_lost("WriteError" if step == "send" else "ReadError", exc)

    def _end(self, lane: _Connection, failure: wire.Failure) -> None:
        """The lane's exchange failed: told to the caller; the connection is closed, and
        opened afresh for the next exchange only if it had worked (the request went)."""
        self._failed = True
        exchange = self._busy.pop(lane)
        self._unwatch(lane)
        lane.close()
        if failure.sent:
            self._shut.append(lane)
        self._on_answer(exchange.key, failure, time.monotonic() - exchange.started)


def _late(step: str) -> wire.Failure:
    """No answer in time, in the words ``lanes`` uses for the step it was at."""
    if step in ("connect", "handshake"):
        return wire.cannot_connect("ConnectTimeout", "timed out")
    return wire.no_answer_in_time("WriteTimeout" if step == "send" else "ReadTimeout")


def _untrusted(exc: OSError) -> bool:
    import ssl  # loaded already: only a TLS lane asks

    return isinstance(exc, ssl.SSLCertVerificationError)
