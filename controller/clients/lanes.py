"""The default wire: HTTP/1.1 on plain sockets, ``size`` keep-alive connections per origin.

Why this module exists: through httpx → httpcore → h11 one API call cost ~1.5 ms of
client CPU on the benchmark VM (issue 7), most of it request and URL models, the
connection pool's bookkeeping and h11's event machine; ``http.client`` still costs
~0.3 ms, a third of it in the ``email`` parser it reads headers with. Writing the bytes
``wire.Endpoint`` built in one send and reading the answer here costs ~0.1 ms, and a whole
call through ``HttpSession`` ~0.3 ms (a loop of GETs of one roleapp from the emulator,
medians of runs alternated with the httpx version).

Used by ``controller.clients.http``, one exchange per thread (``Lanes.send``) or many from
one thread (``Lanes.send_many``, through ``multiplexing``). What it keeps of the httpx
transport it replaces: keep-alive reuse; an idle connection the server closed, or idle past
``KEEPALIVE_EXPIRY``, replaced before use without a word; ``Connection: close``; chunked,
Content-Length and read-to-close bodies; gzip and deflate; TLS by the ``verify`` setting;
one timeout for connect, write and each read; TCP_NODELAY; and httpx's failure kinds
(``ConnectError``, ``ReadTimeout``, ...), so both wires fail with the same words.
"""

from __future__ import annotations

import contextlib
import queue
import re
import select
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

from controller.clients import wire
from controller.clients.wire import MAX_ERROR_BODY, Answer, K, Request

if TYPE_CHECKING:
    # Imported where TLS is set up, not here: ``ssl`` costs ~15 ms of start-up, and plain
    # http (the emulator, a proxy in front of the APIs) never needs it.
    import ssl

# httpx's default: a connection idle longer than this is closed, not reused, because
# servers drop idle ones after a few seconds and a request sent as they do is lost.
KEEPALIVE_EXPIRY = 5.0
MAX_HEAD = 64 * 1024  # bytes of status line and headers we accept, as http.client
MAX_HEADERS = 100
MAX_INTERIM = 10  # "100 Continue" answers skipped before the real one
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_BLANKS = " \t"


def _protocol_error(detail: str) -> wire.Failure:
    return wire.connection_lost("RemoteProtocolError", detail)


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """As httpx builds it: certifi's CAs for True, none checked for False, or a CA file."""
    import ssl

    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        try:
            import certifi  # httpx's own trust store, so verify=True trusts the same CAs
        except ImportError:  # pragma: no cover - certifi comes with httpx
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


def _tls_pending(sock: socket.socket) -> bool:
    """Decrypted bytes buffered at rest: the server spoke unasked, so do not reuse it."""
    import ssl  # loaded already: only a TLS connection calls this

    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _untrusted(exc: OSError) -> bool:
    import ssl  # loaded already: only a TLS connection calls this

    return isinstance(exc, ssl.SSLCertVerificationError)


class Lanes:
    """``size`` one-connection lanes to one origin; each exchange takes a free one.

    Why lanes and not a pool: a pool re-examines its connections under one lock on every
    request; a lane is one connection that one thread owns while it sends, so nothing is
    shared but the queue of free lanes. The session's semaphore admits at most ``size``
    requests, so a lane is always free. Last in, first out: the lane used last is the one
    most likely still open, and the unused ones at the bottom simply expire.
    """

    def __init__(
        self, endpoint: wire.Endpoint, *, size: int, timeout: float, verify: bool | str
    ) -> None:
        context = tls_context(verify) if endpoint.scheme == "https" else None
        self._timeout = timeout
        self._lanes = [_Connection(endpoint, timeout=timeout, context=context) for _ in range(size)]
        self._free: queue.LifoQueue[_Connection] = queue.LifoQueue()
        for lane in self._lanes:
            self._free.put(lane)

    def send(self, request: Request) -> Answer:
        try:
            lane = self._free.get(timeout=self._timeout)
        except queue.Empty:
            raise wire.cannot_connect("PoolTimeout", "no connection became free in time") from None
        try:
            return lane.exchange(request)
        finally:
            self._free.put(lane)

    def send_many(
        self,
        items: Iterator[tuple[K, Request]],
        on_answer: Callable[[K, Answer | wire.Failure, float], None],
        *,
        size: int,
        grow: Callable[[], bool] = lambda: False,
    ) -> None:
        """Exchange ``items`` on ``size`` free lanes at once, and more as ``grow`` allows,
        from this thread alone.

        ``on_answer`` gets each exchange's answer, or the failure ``send`` would have
        raised, with the seconds it took (see ``multiplexing``). The caller holds ``size``
        of the session's slots, so that many lanes are free; ``grow`` is asked when every
        lane taken is busy, and says whether the caller took one slot more.
        """
        from controller.clients import multiplexing  # only apply's writes need it

        taken: list[_Connection] = []

        def another() -> _Connection | None:
            if not grow():
                return None
            # A lane is put back before its slot is released, so one is free for the
            # slot just taken; waiting is only ever for that hand-over's last instant.
            lane = self._free.get(timeout=self._timeout)
            taken.append(lane)
            return lane

        try:
            while len(taken) < size:
                taken.append(self._free.get_nowait())
        except queue.Empty:
            pass
        try:
            multiplexing.exchange_many(
                taken, items, on_answer, timeout=self._timeout, another=another
            )
        finally:
            for lane in taken:
                self._free.put(lane)

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()


class _Connection:
    """One keep-alive connection, opened when first needed and again after each loss."""

    def __init__(
        self, endpoint: wire.Endpoint, *, timeout: float, context: ssl.SSLContext | None
    ) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._context = context
        self._sock: socket.socket | None = None
        self._buffer = bytearray()  # received and not yet read
        self._idle_since = 0.0
        # How the answer reader gets more bytes: from the socket, or (``buffered_answer``)
        # not at all: what was received is all there is yet ("open") or ever ("closed").
        self._source: Literal["socket", "open", "closed"] = "socket"
        self._complete_at = 0  # bytes ``buffered_answer`` needs before it reads again

    def exchange(self, request: Request) -> Answer:
        if self._sock is not None and not self.reusable():
            self.close()
        sock = self._sock if self._sock is not None else self._connect()
        keep = False
        try:
            try:
                # One send: a second small one waits for the first's ACK (Nagle, delayed ACK).
                sock.sendall(request_bytes(request))
            except TimeoutError as exc:
                raise wire.no_answer_in_time("WriteTimeout") from exc
            except OSError as exc:
                raise wire.connection_lost("WriteError", exc) from exc
            try:
                status, headers, body, keep = self._read_answer(request.method)
            except TimeoutError as exc:
                raise wire.no_answer_in_time("ReadTimeout") from exc
            except OSError as exc:
                raise wire.connection_lost("ReadError", exc) from exc
        finally:
            if keep and not self._buffer:  # bytes past the answer: the stream is not sane
                self._idle_since = time.monotonic()
            else:
                self.close()
        return status, headers, body

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer.clear()
        self._complete_at = 0
        if sock is not None:
            with contextlib.suppress(OSError):  # a socket the peer already reset
                sock.close()

    # -- what ``multiplexing`` drives: the same connection, without blocking -------------

    def open_socket(self) -> socket.socket | None:
        """The open socket, if it can be used (closed if idle too long or closed by the peer)."""
        if self._sock is not None and not self.reusable():
            self.close()
        return self._sock

    @property
    def current_socket(self) -> socket.socket | None:
        return self._sock

    @property
    def has_buffered(self) -> bool:
        """Bytes received past the last answer read."""
        return bool(self._buffer)

    @property
    def endpoint(self) -> wire.Endpoint:
        return self._endpoint

    @property
    def context(self) -> ssl.SSLContext | None:
        return self._context

    def adopt(self, sock: socket.socket) -> None:
        """A socket the multiplexer opened for this lane (non-blocking, TLS set up)."""
        self.close()
        self._sock = sock

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def buffered_answer(
        self, method: str, *, closed: bool = False
    ) -> tuple[int, list[tuple[str, str]], bytes, bool] | None:
        """The answer at the head of what was received, or None until all of it is here.

        The same reader as ``exchange``'s, told to stop instead of receiving more; what it
        consumed is put back when the answer is not complete yet. ``closed``: the server
        closed the connection after what was received, which ends an answer read to the
        close, and cuts any other short (the error ``exchange`` would raise).
        Why ``_complete_at``: an answer arriving in many pieces would otherwise be parsed
        again from its start at each, quadratic in its size.
        """
        if not closed and len(self._buffer) < self._complete_at:
            return None
        received = bytes(self._buffer)
        self._source = "closed" if closed else "open"
        try:
            answer = self._read_answer(method)
        except _Incomplete as missing:
            self._complete_at = len(received) + missing.bytes_at_least
            self._buffer[:] = received
            return None
        finally:
            self._source = "socket"
        self._complete_at = 0
        return answer

    def idle_from_now(self) -> None:
        """An answer was read and the connection kept: its keep-alive time starts again."""
        self._idle_since = time.monotonic()

    def _idle_too_long(self) -> bool:
        """Past ``KEEPALIVE_EXPIRY``: the server may close it just as a request goes."""
        return time.monotonic() - self._idle_since > KEEPALIVE_EXPIRY

    def rest(self, timeout: float) -> None:
        """Back to blocking with ``timeout``, as ``exchange`` leaves it."""
        assert self._sock is not None
        self._sock.settimeout(timeout)

    def reusable(self) -> bool:
        """True unless idle too long or closed by the server (readable at rest: EOF)."""
        sock = self._sock
        assert sock is not None
        if self._idle_too_long():
            return False
        if self._context is not None and _tls_pending(sock):
            return False
        if not hasattr(select, "poll"):  # Windows
            return not select.select([sock], [], [], 0)[0]
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        return not poll.poll(0)

    def _connect(self) -> socket.socket:
        endpoint = self._endpoint
        if endpoint.problem is not None:
            raise wire.unusable("UnsupportedProtocol", endpoint.problem)
        # The host goes as bytes, to getaddrinfo and to TLS: given text, each encodes it
        # with the "idna" codec, whose import (stringprep, unicodedata) is ~2.5 ms of a
        # run's start. wire.Endpoint already wrote every name IDNA can encode in ASCII; one
        # left non-ASCII is a name the codec refused (an empty label): it can never work.
        host = endpoint.host
        if not host.isascii():
            raise wire.unusable("InvalidURL", f"{host!r} is not a valid host name")
        address = host.encode("ascii")
        try:
            # The stubs take the host as text only; create_connection hands it to
            # getaddrinfo, which takes bytes as well.
            sock = socket.create_connection((address, endpoint.port), self._timeout)  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise wire.cannot_connect("ConnectTimeout", exc) from exc
        except OSError as exc:  # refused, unreachable, no such host
            raise wire.cannot_connect("ConnectError", exc) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=address)
        except TimeoutError as exc:
            sock.close()
            raise wire.cannot_connect("ConnectTimeout", exc) from exc
        except OSError as exc:  # ssl's errors too, certificate ones among them
            sock.close()
            if self._context is not None and _untrusted(exc):
                raise wire.not_trusted(exc) from exc
            raise wire.cannot_connect("ConnectError", exc) from exc
        self._sock = sock
        return sock

    # -- reading an answer -----------------------------------------------------------

    def _read_answer(self, method: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        for _ in range(MAX_INTERIM):
            version, status, headers = _parse_head(self._read_head())
            if not 100 <= status < 200 or status == 101:
                break  # an interim answer (100 Continue) is skipped, as httpcore does
        else:
            raise _protocol_error("too many interim answers")
        fields: dict[str, str] = {}
        for name, value in headers:
            low = name.lower()
            fields[low] = f"{fields[low]}, {value}" if low in fields else value
        keep = (
            version == "HTTP/1.1"
            and status != 101  # switching protocols: what follows is not HTTP/1.1 any more
            and "close" not in _tokens(fields.get("connection", ""))
        )
        limit = MAX_ERROR_BODY if status >= 400 else None
        if method == "HEAD" or status in (204, 304) or status < 200:
            body, complete = b"", True
        elif "transfer-encoding" in fields:
            if _tokens(fields["transfer-encoding"])[-1:] != ["chunked"]:
                raise _protocol_error("a transfer encoding other than chunked")
            body, complete = self._read_chunked(limit)
        elif "content-length" in fields:
            lengths = set(_tokens(fields["content-length"]))
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise _protocol_error("an invalid Content-Length")
            length = int(lengths.pop())
            body = self._read_exact(length if limit is None else min(length, limit))
            complete = len(body) == length
        else:
            body, complete, keep = self._read_to_close(limit), False, False
        codings = fields.get("content-encoding")
        if codings:
            body = _decode(body, codings, limit=limit)
        return status, headers, body, keep and complete

    def _recv(self) -> bytes:
        if self._source == "open":
            raise _Incomplete(1)
        if self._source == "closed":
            return b""
        assert self._sock is not None
        return self._sock.recv(65536)

    def _read_head(self) -> bytes:
        buffer = self._buffer
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end >= 0:
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                return head
            bare = buffer.find(b"\n\n", start)  # h11 reads bare LF line ends too
            if bare >= 0:
                head = bytes(buffer[:bare])
                del buffer[: bare + 2]
                return head
            if len(buffer) > MAX_HEAD:
                raise _protocol_error("an answer head longer than 64 KiB")
            start = max(0, len(buffer) - 3)
            chunk = self._recv()
            if not chunk:
                if buffer:
                    raise _protocol_error("peer closed connection in the answer's head")
                raise _protocol_error("Server disconnected without sending a response.")
            buffer += chunk

    def _read_line(self) -> bytes:
        buffer = self._buffer
        while (end := buffer.find(b"\n")) < 0:
            if len(buffer) > MAX_HEAD:
                raise _protocol_error("a chunk line longer than 64 KiB")
            chunk = self._recv()
            if not chunk:
                raise _protocol_error("peer closed connection in a chunked body")
            buffer += chunk
        line = bytes(buffer[:end]).rstrip(b"\r")
        del buffer[: end + 1]
        return line

    def _read_exact(self, size: int) -> bytes:
        buffer = self._buffer
        if len(buffer) >= size:
            data = bytes(buffer[:size])
            del buffer[:size]
            return data
        if self._source == "open":
            raise _Incomplete(size - len(buffer))
        # A big body: received straight into its own buffer, not grown 64 KiB at a time.
        body = bytearray(size)
        view = memoryview(body)
        got = len(buffer)
        view[:got] = buffer
        buffer.clear()
        while got < size:
            if self._source == "closed":
                n = 0
            else:
                assert self._sock is not None
                n = self._sock.recv_into(view[got:], min(size - got, 1 << 20))
            if n == 0:
                raise _protocol_error(
                    "peer closed connection without sending complete message body "
                    f"(received {got} bytes, expected {size})"  # h11's words
                )
            got += n
        return bytes(body)

    def _read_chunked(self, limit: int | None) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        for _ in range(1 << 30):  # bounded by the body: each pass reads one chunk
            line = self._read_line().split(b";", 1)[0].strip()
            if not _HEX.fullmatch(line):
                raise _protocol_error("an invalid chunk size")
            length = int(line, 16)
            if length == 0:
                while self._read_line():  # trailer fields, dropped as httpx drops them
                    pass
                return b"".join(parts), True
            if limit is not None and size + length > limit:
                parts.append(self._read_exact(limit - size))
                return b"".join(parts), False
            parts.append(self._read_exact(length))
            size += length
            if self._read_line():
                raise _protocol_error("a chunk not followed by CRLF")
        raise _protocol_error("too many chunks")  # pragma: no cover

    def _read_to_close(self, limit: int | None) -> bytes:
        buffer = self._buffer
        if self._source == "open" and (limit is None or len(buffer) < limit):
            # Only the close (or the limit) ends it: not worth reading again before then.
            raise _Incomplete(1 << 62 if limit is None else limit - len(buffer))
        while limit is None or len(buffer) < limit:
            chunk = self._recv()
            if not chunk:
                break
            buffer += chunk
        data = bytes(buffer if limit is None else buffer[:limit])
        buffer.clear()
        return data


class _Incomplete(Exception):
    """The answer goes on past what was received (``buffered_answer`` only)."""

    def __init__(self, bytes_at_least: int) -> None:
        super().__init__(bytes_at_least)
        self.bytes_at_least = bytes_at_least  # more bytes it needs, at the least


def request_bytes(request: Request) -> bytes:
    """The request as it goes on the wire: request line, header fields, body."""
    head = "".join(
        [
            f"{request.method} {request.target} HTTP/1.1\r\n",
            *[f"{name}: {value}\r\n" for name, value in request.headers],
            "\r\n",
        ]
    ).encode("latin-1")
    return head + request.body if request.body else head


def _parse_head(head: bytes) -> tuple[str, int, list[tuple[str, str]]]:
    """The status line and header fields; obsolete line folding joined as h11 does."""
    try:
        text = head.decode("utf-8")  # as httpx: ASCII, else UTF-8, else Latin-1
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.split("\n")
    version, _, rest = lines[0].rstrip("\r").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise _protocol_error("an answer that is not HTTP/1.x")
    if len(lines) > MAX_HEADERS + 1:
        raise _protocol_error("more than 100 header fields")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip(_BLANKS)}".strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not wire.TOKEN.fullmatch(name):
            raise _protocol_error("a malformed header line")
        headers.append((name, value.strip(_BLANKS)))
    return version, int(code), headers


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def _decode(body: bytes, codings: str, *, limit: int | None) -> bytes:
    """Undo gzip and deflate as httpx does (unknown codings left as they are)."""
    for coding in reversed(_tokens(codings)):
        try:
            if coding in ("gzip", "x-gzip"):
                body = _inflate(body, zlib.MAX_WBITS | 16, limit)
            elif coding == "deflate":
                try:  # a zlib stream, as the standard says; some servers send raw deflate
                    body = _inflate(body, zlib.MAX_WBITS, limit)
                except zlib.error:
                    body = _inflate(body, -zlib.MAX_WBITS, limit)
        except zlib.error as exc:
            raise wire.unusable("DecodingError", exc) from exc
    return body


def _inflate(data: bytes, wbits: int, limit: int | None) -> bytes:
    inflater = zlib.decompressobj(wbits)
    if limit is not None:  # an error body: its start is all we want, and all we hold
        return inflater.decompress(data, limit)
    return inflater.decompress(data) + inflater.flush()
