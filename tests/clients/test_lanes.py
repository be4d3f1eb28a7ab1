"""The default wire's lanes (one keep-alive connection each) against a real local server.

MockTransport tests never reach the lanes, so these use a tiny stdlib HTTP/1.1 server on
127.0.0.1 that counts the TCP connections it accepted and notes which one each request
came on. The wire's answers and failures have their own tests in test_wire.py.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http import server as http_server

import pytest

from controller import errors
from controller.clients import http, lanes, wire


class _Handler(http_server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs

    def setup(self) -> None:
        super().setup()
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.connections += 1  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.ports.append(self.client_address[1])  # type: ignore[attr-defined]
        if self.path.startswith("/slow"):
            time.sleep(0.05)
        if self.path.startswith("/pair"):
            self.server.pair.wait()  # type: ignore[attr-defined]  # two requests at once
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
    srv.ports = []  # type: ignore[attr-defined]  # the client port of each request: its connection
    srv.pair = threading.Barrier(2, timeout=10)  # type: ignore[attr-defined]
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


def test_the_lane_used_last_is_taken_next(server):
    with _session(server, concurrency=4) as session, ThreadPoolExecutor(max_workers=2) as pool:
        statuses = list(pool.map(lambda _: session.request("GET", "/pair").status, range(2)))
        for _ in range(4):
            session.request("GET", "/x")
    # Two lanes were opened at once; afterwards the top of the stack is taken every time
    # (first in, first out would alternate, and open the two lanes never used yet).
    assert statuses == [200, 200]
    assert server.connections == 2
    assert len(set(server.ports[2:])) == 1


def test_no_free_lane_in_time_is_a_failure_before_sending():
    endpoint = wire.Endpoint("http://127.0.0.1:9")
    pool = lanes.Lanes(endpoint, size=1, timeout=0.01, verify=False)
    lane = pool._free.get()  # as if a request held it
    request = endpoint.request("GET", "/", body=b"", content_type=None, headers={})
    try:
        with pytest.raises(wire.Failure) as caught:
            pool.send(request)
        assert (caught.value.kind, caught.value.sent) == ("PoolTimeout", False)
    finally:
        pool._free.put(lane)
        pool.close()


# -- the answer reader, fed piece by piece (as ``multiplexing`` feeds it) -------------------

_BODY = b'{"n": 12345, "pad": "' + b"x" * 300 + b'"}'
_GZIPPED = gzip.compress(_BODY)
_CHUNKS = [_BODY[:7], _BODY[7:100], _BODY[100:]]
FED_ANSWERS = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _CHUNKS)
    + b"0\r\nX-Trailer: 1\r\n\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\n"
    + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY),
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_GZIPPED), _GZIPPED),
}


def _fed_connection(counted: list[int], monkeypatch: pytest.MonkeyPatch) -> lanes._Connection:
    read = lanes._Connection._read_answer

    def counting(self: lanes._Connection, method: str) -> tuple:
        counted.append(1)
        return read(self, method)

    monkeypatch.setattr(lanes._Connection, "_read_answer", counting)
    endpoint = wire.Endpoint("http://127.0.0.1:9")
    return lanes._Connection(endpoint, timeout=1.0, context=None)


@pytest.mark.parametrize("kind", FED_ANSWERS)
@pytest.mark.parametrize("step", [1, 7, 1000])
def test_an_answer_fed_in_pieces_is_read_whole_and_not_read_again_at_each(
    kind: str, step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = FED_ANSWERS[kind]
    parses: list[int] = []
    lane = _fed_connection(parses, monkeypatch)
    answer = None
    for start in range(0, len(data), step):
        assert answer is None  # complete only with its last byte
        lane.feed(data[start : start + step])
        answer = lane.buffered_answer("POST")
    assert answer is not None
    status, _, body, keep = answer
    assert (status, body, keep, lane.has_buffered) == (200, _BODY, True, False)
    # Read again at each piece of a head or chunk line, not at each piece of a body.
    payload = _GZIPPED if kind == "gzip" else _BODY
    framing = len(data) - len(payload)
    assert len(parses) <= -(-framing // step) + data.count(b"\r\n") + 2


def test_an_answer_read_to_the_close_is_read_once_when_the_close_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
    parses: list[int] = []
    lane = _fed_connection(parses, monkeypatch)
    lane.feed(head)
    assert lane.buffered_answer("GET") is None
    for start in range(0, len(_BODY), 10):
        lane.feed(_BODY[start : start + 10])
        assert lane.buffered_answer("GET") is None  # only the close ends it
    assert len(parses) == 1  # the pieces of the body were not read again
    status, _, body, keep = lane.buffered_answer("GET", closed=True) or (0, [], b"", True)
    assert (status, body, keep) == (200, _BODY, False)
