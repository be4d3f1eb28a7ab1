"""One HTTP exchange with the emulator: read a request, route it, write the answer.

Used by ``server`` (its ``ThreadingHTTPServer`` makes one handler per connection). Why a
module of its own: the handler carries a copy of the standard library's ``parse_request``
(only the header step changed, see ``framing``), which is long and has nothing to do with
how the server starts, stops, routes or injects faults.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from controller.emulator import core, framing

if TYPE_CHECKING:
    from controller.emulator.server import EmulatorServer

__all__ = ["HttpServer", "RequestHandler"]


class HttpServer(ThreadingHTTPServer):
    """What a handler sees of its server: the emulator it serves."""

    emulator: EmulatorServer


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    timeout = 120  # an idle keep-alive connection's thread ends eventually
    server: HttpServer
    raw_requestline: bytes  # set by handle_one_request; the stubs leave it out

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler looks up ``do_<METHOD>``: answer every method, LOOKUP too.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Quiet, without formatting the line ``log_message`` would drop anyway."""

    # (second, its Date header text): see date_time_string.
    _date: tuple[int, str] = (-1, "")

    def date_time_string(self, timestamp: float | None = None) -> str:
        # ``email.utils.formatdate`` per answer is measurable; the Date header changes once
        # a second, so its text is made once a second.
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        cached = RequestHandler._date
        if cached[0] != second:
            cached = RequestHandler._date = (second, super().date_time_string(second))
        return cached[1]

    def parse_request(self) -> bool:
        """``BaseHTTPRequestHandler.parse_request`` with the header block read by
        ``framing.parse_headers`` instead of the ``email`` package (see ``framing``).

        The rest is the standard library's (3.11), so an odd request line gets the same
        answer as before: 400 for a bad version or syntax, 505 for HTTP/2, HTTP/0.9 rules.
        """
        self.command = None  # type: ignore[assignment]  # set in case of an error below
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:  # enough to determine the protocol version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                parts = base_version_number.split(".")
                # RFC 2145 section 3.1: one ".", each side a separate integer.
                if len(parts) != 2:
                    raise ValueError
                if any(not part.isdigit() or len(part) > 10 for part in parts):
                    raise ValueError
                version_number = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if version_number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if version_number >= (2, 0):
                self.send_error(
                    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                    f"Invalid HTTP version ({base_version_number})",
                )
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):  # gh-87389: no open redirect through "//host/path"
            self.path = "/" + self.path.lstrip("/")
        try:
            # The stubs type ``headers`` as email.message.Message; what is read of it, here
            # and by the APIs, is only ``get``, which framing's Headers answers alike.
            self.headers = framing.parse_headers(self.rfile)  # type: ignore[assignment]
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err)
            )
            return False
        conntype = self.headers.get("Connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "")
        if (
            expect.lower() == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
        ):
            return bool(self.handle_expect_100())
        return True

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        try:
            body = framing.read_body(self.rfile, self.headers)
        except ValueError as exc:
            self.close_connection = True
            self._write(core.generic_error(400, f"bad request framing: {exc}"))
            return
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path) or "/"
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        if path.startswith("/_control/"):
            self._write(emulator.control_request(path, body))
            return
        routed = emulator.route(path)
        if routed is None:
            self._write(core.generic_error(404, f"no API is mounted at {path}"))
            return
        api, subpath = routed
        request = core.EmuRequest(
            method=self.command.upper(),
            path=subpath,
            query=query,
            headers=self.headers,
            body=body,
            client=self.client_address[0],
        )
        response = emulator.call(api, request)
        if response is None:
            self.close_connection = True  # drop: close without writing a byte
            return
        self._write(response)

    def _write(self, response: core.EmuResponse) -> None:
        self.send_response(response.status)
        headers = dict(response.headers)
        # HEAD answers may state the length of the body they do not send.
        length = headers.pop("Content-Length", None)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", length or str(len(response.body)))
        if headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        # end_headers() writes the head, then the body would go in a second write: one
        # write instead saves a system call and a TCP segment per answer.
        buffer: list[bytes] = getattr(self, "_headers_buffer", [])
        if self.request_version != "HTTP/0.9":
            buffer.append(b"\r\n")
        if self.command.upper() != "HEAD" and response.body:
            buffer.append(response.body)
        self._headers_buffer: list[bytes] = []
        if buffer:
            self.wfile.write(b"".join(buffer))
