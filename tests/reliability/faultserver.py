"""A fault server: a loopback proxy in front of the emulator that answers chosen calls badly.

The emulator's ``fail`` rule answers JSON only; the bad answers real servers and proxies
give — an HTML error page, a JSON document cut short, a body of many megabytes, any bytes
with any content type — need a server that writes raw bytes. Everything not armed is
forwarded to the emulator unchanged, so logins and the other calls stay real.
Tests only; 127.0.0.1 only.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclasses.dataclass
class Answer:
    method: str
    path: re.Pattern[str]
    status: int
    body: bytes
    content_type: str
    times: int


class FaultServer:
    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self.served: list[str] = []  # "METHOD /path" of every armed answer given
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def answer(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 200,
        body: bytes,
        content_type: str = "application/json",
        times: int = 1,
    ) -> None:
        """The next ``times`` calls matching (full path, below the host) get this answer."""
        with self._lock:
            self._answers.append(
                Answer(method.upper(), re.compile(path_regex), status, body, content_type, times)
            )

    def take(self, method: str, path: str) -> Answer | None:
        with self._lock:
            for answer in self._answers:
                if answer.method in ("*", method) and answer.path.search(path):
                    answer.times -= 1
                    if answer.times <= 0:
                        self._answers.remove(answer)
                    self.served.append(f"{method} {path}")
                    return answer
        return None


def _handler(server: FaultServer) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):  # every method, Era's LOOKUP too
                return self._serve
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urllib.parse.urlsplit(self.path).path
            armed = server.take(self.command, path)
            if armed is not None:
                self._write(armed.status, {"Content-Type": armed.content_type}, armed.body)
                return
            upstream = http.client.HTTPConnection(*server.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                reply = upstream.getresponse()
                data = reply.read()
                kept = {k: v for k, v in reply.getheaders() if k.lower() not in _HOP_BY_HOP}
                self._write(reply.status, kept, data)
            finally:
                upstream.close()

        def _write(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler
