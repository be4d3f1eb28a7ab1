"""The wire through an injected httpx transport: how the tests' fake servers meet a session.

``HttpSession(..., transport=httpx.MockTransport(handler))`` sends every request through
:class:`TransportWire`: the same :class:`wire.Request` bytes the default wire
(``lanes.Lanes``) writes to a socket, handed to the transport as an ``httpx.Request``,
with httpx's exceptions mapped by :func:`classify` onto the same :class:`wire.Failure` the
socket wire raises. So the session's logic above both wires (login, retries, error
mapping) is tested with scripted fakes, and the default wire over real sockets.

The only module that imports ``httpx``, and only ``controller.clients.http`` imports it,
when a session is given a transport; a run against real servers never loads httpx.
"""

from __future__ import annotations

import ssl

import httpx

from controller.clients import wire


class TransportWire:
    def __init__(self, transport: httpx.BaseTransport, *, origin: str, timeout: float) -> None:
        self._transport = transport
        self._origin = origin
        self._timeout = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}

    def send(self, request: wire.Request) -> wire.Answer:
        built = httpx.Request(
            request.method,
            self._origin + request.target,
            headers=request.headers,
            content=request.body or None,
            extensions={"timeout": self._timeout},
        )
        try:
            raw = self._transport.handle_request(built)
            try:
                # Error answers are read only in part: a message needs the start.
                body = _read_body(raw, whole=raw.status_code < 400)
                return raw.status_code, raw.headers.multi_items(), body
            finally:
                raw.close()
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            raise failure from exc

    def close(self) -> None:
        self._transport.close()


def _read_body(raw: httpx.Response, *, whole: bool) -> bytes:
    if whole:
        return raw.read()
    chunks: list[bytes] = []
    size = 0
    for chunk in raw.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= wire.MAX_ERROR_BODY:
            break  # the rest is dropped with the connection; messages need only the start
    return b"".join(chunks)[: wire.MAX_ERROR_BODY]


def classify(exc: Exception) -> wire.Failure | None:
    """An httpx exception as a wire.Failure (None: not httpx's, let it through)."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and _is_certificate_error(exc):
        return wire.not_trusted(exc)
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
        return wire.cannot_connect(kind, exc)
    if isinstance(exc, httpx.TimeoutException):
        return wire.no_answer_in_time(kind)
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return wire.connection_lost(kind, exc)
    if isinstance(exc, httpx.HTTPError | httpx.InvalidURL | httpx.StreamError):
        return wire.unusable(kind, exc)
    return None


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # a bounded walk down the cause chain
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
