"""The server's own request framing reads headers as ``http.client.parse_headers`` does, and
answers byte for byte as ``BaseHTTPRequestHandler`` did (raw sockets, no HTTP client).
"""

from __future__ import annotations

import http.client
import io
import re
import socket
from collections.abc import Iterator

import pytest

from controller.emulator import core, framing, handler, server

from .test_server import EchoApi

BLOCKS = [
    b"Host: x\r\nAuthorization: Bearer abc\r\n\r\n",
    b"host: x\r\nAUTHORIZATION:   Bearer abc  \r\nX-Empty:\r\nX-Tab:\tv\r\n\r\n",
    b"Authorization: first\r\nAuthorization: second\r\n\r\n",  # the first wins
    b"Host: 127.0.0.1:8080\r\nX-Colons: a:b:c\n\n",  # bare LF line ends
    b"X-Latin: caf\xe9\r\n\r\n",
    b"Authorization: Bearer\r\n abc\r\nConnection: close\r\n\r\n",  # folded: email parser
    b"Authorization: Bearer abc\r\nbogus line\r\nConnection: close\r\n\r\n",  # no colon
    b"X-Odd : spaced name\r\nConnection: close\r\n\r\n",
    b"From nobody\r\nConnection: close\r\n\r\n",
    b"X-CR: a\rb\r\nConnection: close\r\n\r\n",
    b"\r\n",
]
NAMES = ["Host", "authorization", "X-Empty", "x-tab", "X-Colons", "X-Latin", "Connection", "X-Odd"]


@pytest.mark.parametrize("block", BLOCKS)
def test_headers_read_as_the_standard_library_reads_them(block: bytes) -> None:
    expected = http.client.parse_headers(io.BytesIO(block + b"BODY"))
    stream = io.BytesIO(block + b"BODY")
    parsed = framing.parse_headers(stream)
    assert stream.read() == b"BODY"  # nothing past the blank line is consumed
    for name in NAMES:
        assert parsed.get(name) == expected.get(name), name
        assert parsed.get(name, "-") == expected.get(name, "-"), name


def test_header_limits_as_the_standard_library() -> None:
    with pytest.raises(http.client.LineTooLong):
        framing.parse_headers(io.BytesIO(b"X: " + b"a" * 70_000 + b"\r\n\r\n"))
    many = b"".join(b"X-%d: v\r\n" % n for n in range(101)) + b"\r\n"
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        framing.parse_headers(io.BytesIO(many))


@pytest.fixture
def echo_server() -> Iterator[server.EmulatorServer]:
    with server.EmulatorServer([EchoApi("element")]) as running:
        yield running


def exchange(emu: server.EmulatorServer, data: bytes) -> bytes:
    """Everything the server writes until it closes the connection."""
    with socket.create_connection((emu.host, emu.port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return re.sub(rb"Date: [^\r]+", b"Date: D", received)


def test_an_answer_byte_for_byte(echo_server: server.EmulatorServer) -> None:
    body = core.encode_json(
        {"method": "GET", "path": "/x", "query": {}, "body": "", "type": "text/plain"}
    )
    answer = exchange(
        echo_server,
        b"GET /element/x HTTP/1.1\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
    )
    head = (
        "HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/{v}\r\nDate: D\r\n"
        "Content-Type: application/json; charset=utf-8\r\nContent-Length: {n}\r\n\r\n"
    ).format(v=handler.RequestHandler.sys_version.split("/")[1], n=len(body))
    assert answer == head.encode() + body
    head_only = exchange(echo_server, b"HEAD /element/x HTTP/1.1\r\nConnection: close\r\n\r\n")
    head_body = core.encode_json(
        {"method": "HEAD", "path": "/x", "query": {}, "body": "", "type": None}
    )
    assert head_only.endswith(b"\r\nContent-Length: %d\r\n\r\n" % len(head_body))  # no body


def test_keep_alive_answers_in_order(echo_server: server.EmulatorServer) -> None:
    answer = exchange(
        echo_server,
        b"GET /element/a HTTP/1.1\r\n\r\nGET /element/b HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b'"path":"/a"') < answer.index(b'"path":"/b"')


@pytest.mark.parametrize(
    ("request_line", "status", "message"),
    [
        (b"GET / HTTP/x.y", 400, b"Bad request version ('HTTP/x.y')"),
        (b"GET / HTTP/2.0", 505, b"Invalid HTTP version (2.0)"),
        (b"GET / / HTTP/1.1", 400, b"Bad request syntax ('GET / / HTTP/1.1')"),
        (b"POST /element/x", 400, b"Bad HTTP/0.9 request type ('POST')"),
    ],
)
def test_bad_request_lines_as_the_standard_library(
    echo_server: server.EmulatorServer, request_line: bytes, status: int, message: bytes
) -> None:
    answer = exchange(echo_server, request_line + b"\r\n\r\n")
    assert b"Error code: %d" % status in answer
    assert message in answer


def test_header_errors_and_expect_continue(echo_server: server.EmulatorServer) -> None:
    long_line = b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"
    assert exchange(echo_server, long_line).startswith(b"HTTP/1.1 431 Line too long\r\n")
    expect = (
        b"POST /element/x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\nhi"
    )
    answer = exchange(echo_server, expect)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert answer.endswith(b'"body":"hi","type":null}')
