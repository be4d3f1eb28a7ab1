"""A scripted HTTP server on 127.0.0.1 for the wire tests: real sockets, chosen bytes.

Each test gives it a reply function that sees every request and returns exactly the bytes
to write (or closes, resets, or says nothing), so framing, keep-alive and failures are
checked against real sockets. Used by ``test_wire`` and ``test_multiplexing``.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

RESET = object()  # a reply: close with an RST instead of an answer
MAX_REQUESTS = 50  # per connection: every server loop is bounded


@dataclasses.dataclass(frozen=True)
class Seen:
    head: bytes  # request line and headers
    body: bytes
    connection: int  # which accepted connection it came on, from 1


Reply = Callable[[Seen], Any]  # bytes to write, None to close without a word, or RESET


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each request with ``reply(seen)``."""

    def __init__(
        self, reply: Reply, *, tls: ssl.SSLContext | None = None, hang_up: bool = False
    ) -> None:
        self.reply = reply
        self.tls = tls
        self.hang_up = hang_up  # close each connection right after its first answer
        self.hung_up = threading.Event()
        self.seen: list[Seen] = []
        self.connections = 0
        self.release = threading.Event()  # ends any reply that waits (a stalled server)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self.release.set()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
                number = self.connections
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(10)
        reader = None
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            reader = conn.makefile("rb")
            for _ in range(MAX_REQUESTS):
                seen = _read_request(reader, number)
                if seen is None:
                    return
                with self._lock:
                    self.seen.append(seen)
                answer = self.reply(seen)
                if answer is RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if answer is None:
                    return
                conn.sendall(answer)
                if self.hang_up:
                    return
        except OSError:  # the client went away, or refused our certificate
            return
        finally:
            if reader is not None:
                reader.close()  # the socket closes only when its file is closed too
            conn.close()
            self.hung_up.set()


def _read_request(reader: Any, number: int) -> Seen | None:
    lines = []
    for _ in range(100):
        line = reader.readline(65536)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
    head = b"".join(lines)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return Seen(head, reader.read(length) if length else b"", number)


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(reply: Reply, **options: Any) -> RawServer:
        servers.append(RawServer(reply, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a self-signed certificate with")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def answer(
    status: int = 200, body: bytes = b'{"ok":true}', *, headers: tuple[str, ...] = ()
) -> bytes:
    lines = [f"HTTP/1.1 {status} X", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ok(seen: Seen) -> bytes:
    return answer()
