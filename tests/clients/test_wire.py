"""The default wire (``lanes``, plain sockets) against raw servers on 127.0.0.1.

Each test scripts a tiny TCP server that reads requests and writes exactly the bytes the
test gives it (or closes, resets, or says nothing), so the framing, the keep-alive rules
and the failure classification are checked against real sockets. The session logic above
the wire is the MockTransport tests' subject; here it only turns failures into errors.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import zlib
from typing import Any

import httpx
import pytest

from controller import errors
from controller.clients import http, lanes, wire
from tests.clients.rawserver import RESET, Reply, Seen, answer, certificate, ok, serve

__all__ = ["certificate", "serve"]  # fixtures, used by name


def session_for(url: str, **settings: Any) -> http.HttpSession:
    return http.HttpSession(
        http.HttpSettings(base_url=url, connection="local", **settings),
        sleep=lambda seconds: None,  # retries without waiting
        random=lambda: 0.0,
    )


# -- keep-alive ------------------------------------------------------------------------


def test_a_keep_alive_connection_is_reused(serve):
    server = serve(ok)
    with session_for(server.url, concurrency=4) as session:
        for _ in range(3):
            assert session.request("GET", "/x").json() == {"ok": True}
    assert server.connections == 1
    assert [seen.connection for seen in server.seen] == [1, 1, 1]


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry(serve):
    server = serve(ok, hang_up=True)
    with session_for(server.url) as session:
        assert session.request("POST", "/x", json={}).status == 200
        assert server.hung_up.wait(timeout=5)
        # Not idempotent: had the dead connection been used, this would be maybe-applied.
        assert session.request("POST", "/x", json={}).status == 200
        assert session.stats.as_dict()["retries"] == 0
    assert server.connections == 2


def test_connection_close_answers_and_expired_connections_are_not_reused(serve, monkeypatch):
    server = serve(lambda seen: answer(headers=("Connection: close",)))
    with session_for(server.url) as session:
        for _ in range(2):
            session.request("GET", "/x")
    assert server.connections == 2

    monkeypatch.setattr(lanes, "KEEPALIVE_EXPIRY", -1.0)  # every idle connection has expired
    server = serve(ok)
    with session_for(server.url) as session:
        for _ in range(2):
            session.request("GET", "/x")
    assert server.connections == 2


def test_bytes_past_the_answer_mean_the_connection_is_not_reused(serve):
    server = serve(lambda seen: answer() + b"HTTP/1.1 200 stray\r\n")
    with session_for(server.url) as session:
        for _ in range(2):
            assert session.request("GET", "/x").json() == {"ok": True}
    assert server.connections == 2


# -- bodies ----------------------------------------------------------------------------


def test_a_chunked_body_with_extensions_and_trailers(serve):
    chunked = b'4;ext=1\r\n{"a"\r\n6\r\n:[1,2]\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n'
    server = serve(lambda seen: answer(body=chunked, headers=("Transfer-Encoding: chunked",)))
    with session_for(server.url) as session:
        assert session.request("GET", "/x").json() == {"a": [1, 2]}
        assert session.request("GET", "/x").json() == {"a": [1, 2]}
    assert server.connections == 1


@pytest.mark.parametrize(
    "coding, encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw deflate
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
def test_compressed_bodies_are_decoded(serve, coding, encode):
    document = b'{"items":[' + b",".join(b'{"id":%d}' % n for n in range(500)) + b"]}"
    server = serve(
        lambda seen: answer(body=encode(document), headers=(f"Content-Encoding: {coding}",))
    )
    with session_for(server.url) as session:
        assert len(session.request("GET", "/x").json()["items"]) == 500
    assert b"accept-encoding: gzip, deflate" in server.seen[0].head.lower()


def test_a_body_read_to_the_close_and_an_interim_answer(serve):
    server = serve(
        lambda seen: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n[1]", hang_up=True
    )
    with session_for(server.url) as session:
        assert session.request("GET", "/x").json() == [1]


def test_a_big_error_body_is_read_in_part_and_its_connection_dropped(serve):
    big = b"<html>" + b"x" * (3 * wire.MAX_ERROR_BODY)
    server = serve(lambda seen: answer(404, big) if b"/big" in seen.head else answer())
    with session_for(server.url) as session:
        response = session.request("GET", "/big", ok=(404,))
        assert response.body == big[: wire.MAX_ERROR_BODY]
        assert session.request("GET", "/x").status == 200
        session.request("GET", "/small", ok=(200,))
    # The unread rest of the big answer made its connection useless; the small one's not.
    assert [seen.connection for seen in server.seen] == [1, 2, 2]


def test_a_small_error_body_keeps_its_connection(serve):
    server = serve(lambda seen: answer(400, b'{"message":"bad folder"}'))
    with session_for(server.url) as session:
        for _ in range(2):
            with pytest.raises(errors.PermanentApiError, match="bad folder"):
                session.request("POST", "/x", json={})
    assert server.connections == 1


# -- failures --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_a_refused_connection_was_not_sent_and_is_retried_for_any_method():
    session = session_for(f"http://127.0.0.1:{_free_port()}", max_attempts=2)
    with pytest.raises(errors.TransientApiError) as caught:
        session.request("POST", "/x", json={})
    assert not caught.value.maybe_applied
    assert "cannot connect (ConnectError: " in str(caught.value)
    assert session.stats.as_dict()["retries"] == 1


@pytest.mark.parametrize(
    "reply, words",
    [
        (
            lambda seen: None,
            "(RemoteProtocolError: Server disconnected without sending a response.)",
        ),
        (lambda seen: RESET, "connection lost before the answer (ReadError: "),
        (
            lambda seen: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
            "received 1 bytes, expected 100",
        ),
        (lambda seen: b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not HTTP/1.x"),
        (lambda seen: b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "a malformed header line"),
    ],
    ids=["closed", "reset", "truncated", "not-http", "bad-header"],
)
def test_an_answer_lost_after_sending_may_have_been_applied(serve, reply, words):
    server = serve(reply, hang_up=True)  # a truncated answer is not followed by its rest
    with session_for(server.url) as session:
        with pytest.raises(errors.TransientApiError) as caught:
            session.request("POST", "/x", json={})
        assert caught.value.maybe_applied
        assert words in str(caught.value)
        assert len(server.seen) == 1  # not repeated: it may have been applied

        server.seen.clear()  # an idempotent call is repeated, on a new connection
        server.reply = _first_then(reply, ok)
        assert session.request("GET", "/x").status == 200
        assert len(server.seen) == 2


def _first_then(first: Reply, then: Reply) -> Reply:
    played: list[int] = []

    def reply(seen: Seen) -> Any:
        played.append(1)
        return first(seen) if len(played) == 1 else then(seen)

    return reply


def test_no_answer_in_time_is_a_read_timeout(serve):
    server = serve(lambda seen: server.release.wait(timeout=10) and None)
    with (
        session_for(server.url, timeout=0.2) as session,
        pytest.raises(errors.TransientApiError) as caught,
    ):
        session.request("POST", "/x", json={})
    assert caught.value.maybe_applied
    assert "no answer in time (ReadTimeout)" in str(caught.value)


def test_a_base_url_that_cannot_work_is_permanent():
    session = session_for("ftp://127.0.0.1/x")
    with session, pytest.raises(errors.PermanentApiError, match="UnsupportedProtocol"):
        session.request("GET", "/x")


def test_a_host_name_idna_refuses_is_permanent_and_never_leaves_the_machine():
    # An empty label: the idna codec refuses it before any lookup (a traceback, once).
    session = session_for("http://пример..рф/x")
    with session, pytest.raises(errors.PermanentApiError, match="not a valid host name"):
        session.request("GET", "/x")
    assert session.stats.as_dict()["retries"] == 0


def test_no_secret_reaches_a_failure_message(serve, caplog):
    # Secrets the session does not know: only the wire's own care keeps them out.
    token, password = "Bearer tok-5f2e9a", "pw-8c1d7b"
    body = {"login": "converge", "password": password}
    replies: list[Reply] = [
        lambda seen: None,
        lambda seen: RESET,
        lambda seen: b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{",
        lambda seen: b"garbage " + seen.head + seen.body + b"\r\n\r\n",
        lambda seen: server.release.wait(timeout=10) and None,
    ]
    messages: list[str] = []
    for reply in replies:
        server = serve(reply)
        with session_for(server.url, timeout=0.2) as session:
            with (
                pytest.raises(errors.ApiError) as caught,
                caplog.at_level("DEBUG", "converge.http"),
            ):
                session.request("POST", "/login", json=body, headers={"Authorization": token})
            messages.append(str(caught.value))
    with session_for(f"http://127.0.0.1:{_free_port()}", max_attempts=1) as session:
        for headers in ({"Authorization": token}, {"Authorization": f"{token}\r\nX-Evil: 1"}):
            with pytest.raises(errors.ApiError) as caught:
                session.request("POST", "/login", json=body, headers=headers)
            messages.append(str(caught.value))
    assert "character not allowed in header Authorization" in messages[-1]
    messages += [record.getMessage() for record in caplog.records]
    assert len(messages) > len(replies) + 2  # the debug lines too
    for message in messages:
        assert "tok-5f2e9a" not in message and password not in message, message


# -- TLS -------------------------------------------------------------------------------


def test_tls_verifies_with_the_ca_file_and_refuses_an_unknown_certificate(serve, certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = serve(ok, tls=context)

    session = session_for(server.url, verify=True)
    with session, pytest.raises(errors.PermanentApiError) as caught:
        session.request("GET", "/x")
    assert "TLS certificate not trusted" in str(caught.value)
    assert session.stats.as_dict()["retries"] == 0

    for verify in (str(cert), False):
        with session_for(server.url, verify=verify) as session:
            assert session.request("GET", "/x").json() == {"ok": True}
            assert session.request("GET", "/x").json() == {"ok": True}
    assert server.connections == 3  # one refused, then one kept alive per session


# -- requests as httpx built them ------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    ["http://h:81/base path/x", "https://h/era/", "http://[::1]:8080", "https://пример.рф/era"],
)
@pytest.mark.parametrize(
    "method, path, params, json, content, headers",
    [
        ("GET", "/p a/é/%2F/./x/../y{}`|", None, None, None, {}),
        (
            "GET",
            "/x",
            {"a": True, "b": False, "c": None, "d": 1.5, "e": [1, "x y"]},
            None,
            None,
            {},
        ),
        ("GET", "/x", {"f": "a/b,c&d=é+%", "g": ""}, None, None, {}),
        ("GET", "", {}, None, None, {}),
        ("POST", "/x", None, {"a": "é", "b": [1, 2.5], "c": None}, None, {"Authorization": "t"}),
        ("POST", "/x", None, None, None, {}),
        ("PUT", "/x", None, None, b"abc", {"content-type": "x/y"}),
        ("LOOKUP", "/x", None, "abc", None, {"Content-Type": "text/plain"}),
    ],
)
def test_requests_are_built_as_httpx_built_them(base, method, path, params, json, content, headers):
    client = httpx.Client(base_url=base, headers={"X-Session": "s"})
    want = client.build_request(
        method, path, params=params, json=json, content=content, headers=headers
    )
    endpoint = wire.Endpoint(base, headers={"X-Session": "s"})
    body, content_type = wire.encode_body(json, content)
    got = endpoint.request(
        method,
        endpoint.target(path, params),
        body=body,
        content_type=content_type,
        headers=headers,
    )
    assert endpoint.origin + got.target == str(want.url)
    assert got.body == want.content
    different = {"user-agent"}  # ours names converge
    assert {k.lower(): v for k, v in got.headers if k.lower() not in different} == {
        k.lower(): v for k, v in want.headers.multi_items() if k.lower() not in different
    }


# -- both wires, one behaviour ---------------------------------------------------------


PARITY = {
    "json": lambda seen: answer(headers=("Content-Type: application/json", "X-Id: 7")),
    "gzip": lambda seen: answer(body=gzip.compress(b"[1]"), headers=("Content-Encoding: gzip",)),
    "chunked": lambda seen: answer(
        body=b"3\r\n[1]\r\n0\r\n\r\n", headers=("Transfer-Encoding: chunked",)
    ),
    "big-error": lambda seen: answer(502, b"y" * (2 * wire.MAX_ERROR_BODY)),
    "closed": lambda seen: None,
    "reset": lambda seen: RESET,
    "truncated": lambda seen: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
}


def _outcome(session: http.HttpSession) -> tuple[Any, ...]:
    try:
        response = session.request("POST", "/x", json={"a": 1})
    except errors.ApiError as exc:
        return type(exc).__name__, exc.status, exc.maybe_applied, str(exc)
    headers = {k.lower(): v for k, v in response.headers.items()}
    return response.status, headers, response.body


@pytest.mark.parametrize("name", sorted(PARITY))
def test_the_socket_wire_answers_and_fails_as_httpx_did(serve, name):
    outcomes = []
    for transport in (None, httpx.HTTPTransport()):
        server = serve(PARITY[name], hang_up=True)
        session = http.HttpSession(
            http.HttpSettings(base_url=server.url, connection="local"), transport=transport
        )
        with session:
            outcomes.append(_outcome(session))
    assert outcomes[0] == outcomes[1]
