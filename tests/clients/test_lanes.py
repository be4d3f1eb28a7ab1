"""The session's own connection pool (one-connection lanes) against a real local server.

MockTransport tests never reach the pool, so these use a tiny stdlib HTTP/1.1 server on
127.0.0.1 that counts the TCP connections it accepted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import server as http_server

import httpx
import pytest

from controller import errors
from controller.clients import http


class _Handler(http_server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs

    def setup(self) -> None:
        super().setup()
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.connections += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(0.05)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http_server.ThreadingHTTPServer]:
    srv = http_server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()  # type: ignore[attr-defined]
    srv.connections = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _session(server: http_server.ThreadingHTTPServer, concurrency: int) -> http.HttpSession:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return http.HttpSession(
        http.HttpSettings(base_url=url, connection="local", concurrency=concurrency)
    )


def test_sequential_calls_reuse_one_connection(server):
    with _session(server, concurrency=4) as session:
        for _ in range(5):
            assert session.request("GET", "/x").json() == {"ok": True}
    assert server.connections == 1


def test_parallel_calls_open_at_most_concurrency_connections(server):
    with _session(server, concurrency=3) as session, ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: session.request("GET", "/slow").status, range(12)))
    assert answers == [200] * 12
    assert 1 <= server.connections <= 3


def test_a_lane_comes_back_when_an_error_answer_is_closed(server):
    with _session(server, concurrency=1) as session:
        with pytest.raises(errors.PermanentApiError):
            session.request("GET", "/x", ok=(201,))
        assert session.request("GET", "/x").status == 200  # the only lane is free again


def test_no_free_lane_within_the_pool_timeout_is_a_pool_timeout():
    lanes = http._Lanes(size=1, verify=False)
    lane = lanes._free.get()  # as if a request held it
    try:
        request = httpx.Request(
            "GET", "http://127.0.0.1:9/", extensions={"timeout": {"pool": 0.01}}
        )
        with pytest.raises(httpx.PoolTimeout):
            lanes.handle_request(request)
    finally:
        lanes._free.put(lane)
        lanes.close()
