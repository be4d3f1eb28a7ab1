"""``HttpSession.send_many``: many calls from one thread, on raw servers on 127.0.0.1.

What it promises: each call is sent at most once, ``concurrency`` at a time, from the
calling thread alone; ``on_answer`` gets exactly the calls answered with an ``ok`` status;
anything else (an error status, a lost or late answer, a connection that will not open or
be trusted) is simply not answered, for the caller to make again with ``request``, and the
session stays fit for that.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller import errors
from controller.clients import http, wire
from tests.clients.rawserver import RESET, Seen, answer, certificate, serve

__all__ = ["certificate", "serve"]  # fixtures, used by name

TIMEOUT = 2.0  # seconds: the longest any test here waits for one answer


def session_for(url: str, **settings: Any) -> http.HttpSession:
    settings.setdefault("timeout", TIMEOUT)
    return http.HttpSession(
        http.HttpSettings(base_url=url, connection="local", **settings),
        sleep=lambda seconds: None,
        random=lambda: 0.0,
    )


def echo(seen: Seen) -> bytes:
    """Answers each call with its own body, so an answer can be matched to its call."""
    return answer(201, seen.body or b"{}")


def calls(n: int, method: str = "POST") -> list[tuple[int, http.Call]]:
    return [(i, http.Call(method, "/items", {"n": i})) for i in range(n)]


def send(
    session: http.HttpSession, items: list[tuple[int, http.Call]]
) -> tuple[dict[int, http.HttpResponse], dict[int, http.FirstAttempt]]:
    """(the calls answered ok, the other calls sent with their first attempts)."""
    answered: dict[int, http.HttpResponse] = {}
    others: dict[int, http.FirstAttempt] = {}

    def on_answer(key: int, response: http.HttpResponse) -> None:
        assert key not in answered and key not in others  # never twice
        answered[key] = response

    def on_other(key: int, first: http.FirstAttempt) -> None:
        assert key not in answered and key not in others
        others[key] = first

    session.send_many(items, on_answer, on_other)
    return answered, others


def test_every_call_is_answered_from_this_thread_at_most_concurrency_at_a_time(serve):
    server = serve(echo)
    before = set(threading.enumerate())
    seen_threads: set[int] = set()
    answered: dict[int, Any] = {}

    def on_answer(key: int, response: http.HttpResponse) -> None:
        seen_threads.add(threading.get_ident())
        started = set(threading.enumerate()) - before
        assert all("_serve" in t.name for t in started)  # the server's, none of ours
        answered[key] = response.json()

    with session_for(server.url, concurrency=4) as session:
        session.send_many(calls(40), on_answer, lambda key, first: pytest.fail(str(key)))
        assert session.stats.as_dict()["requests"] == 40
        assert session.request("GET", "/after").status == 201  # the lanes are fit for use
    assert answered == {i: {"n": i} for i in range(40)}
    assert seen_threads == {threading.get_ident()}
    assert server.connections == 4  # kept alive, one per lane
    assert len(server.seen) == 41  # each sent once


def test_calls_are_taken_only_when_a_lane_is_free_so_a_stopped_caller_sends_no_more(serve):
    server = serve(echo)
    taken: list[int] = []

    def items() -> Iterator[tuple[int, http.Call]]:
        for key, call in calls(10):
            if key == 6:
                return  # as Ctrl-C stops apply's taker
            taken.append(key)
            yield key, call

    with session_for(server.url, concurrency=3) as session:
        answered: list[int] = []
        session.send_many(items(), lambda key, _r: answered.append(key), pytest.fail)
    assert sorted(answered) == taken == [0, 1, 2, 3, 4, 5]
    assert len(server.seen) == 6


TROUBLE = {
    "conflict": answer(409, b'{"error":"exists"}'),
    "busy": answer(503, b"{}", headers=("Retry-After: 1",)),
    "closed": None,  # closed without a word
    "reset": RESET,
}


@pytest.mark.parametrize("trouble", TROUBLE)
def test_the_first_call_not_plainly_done_is_handed_back_and_no_more_are_sent(serve, trouble):
    troubled: list[int] = []

    def reply(seen: Seen) -> Any:
        if json.loads(seen.body)["n"] == 3 and not troubled:  # once only
            troubled.append(3)
            return TROUBLE[trouble]
        return echo(seen)

    server = serve(reply)
    with session_for(server.url, concurrency=1, max_attempts=2) as session:
        answered, others = send(session, calls(12))
        assert sorted(answered) == [0, 1, 2]
        assert list(others) == [3]
        assert len(server.seen) == 4  # the rest were never sent
        # request() goes on from that first attempt: it counts as one of the two allowed.
        if trouble == "conflict":  # final: raised as it is, nothing sent again
            with pytest.raises(errors.PermanentApiError, match="409"):
                session.request("POST", "/items", json={"n": 3}, first=others[3])
            assert len(server.seen) == 4
        else:  # a second attempt, which the server answers
            response = session.request(
                "POST", "/items", json={"n": 3}, idempotent=True, first=others[3]
            )
            assert response.json() == {"n": 3}
            assert len(server.seen) == 5


def test_an_answer_with_connection_close_is_read_and_its_lane_opened_afresh(serve):
    server = serve(lambda seen: answer(200, seen.body, headers=("Connection: close",)))
    with session_for(server.url, concurrency=2) as session:
        assert sorted(send(session, calls(6))[0]) == list(range(6))
    assert server.connections == 6


def test_a_lane_the_server_dropped_while_idle_is_opened_afresh(serve):
    server = serve(echo, hang_up=True)  # closes each connection after its first answer
    with session_for(server.url, concurrency=1) as session:
        session.request("POST", "/items", json={"n": -1})
        assert server.hung_up.wait(TIMEOUT)
        time.sleep(0.05)  # the close has reached our side
        assert sorted(send(session, calls(1))[0]) == [0]


def test_answers_in_pieces_chunked_and_compressed_are_read_whole(serve):
    import gzip

    def reply(seen: Seen) -> bytes:
        n = json.loads(seen.body)["n"]
        body = seen.body
        if n % 3 == 0:
            return answer(200, gzip.compress(body), headers=("Content-Encoding: gzip",))
        if n % 3 == 1:
            chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
            return answer(200, chunk, headers=("Transfer-Encoding: chunked",))
        return answer(200, body)

    server = serve(reply)
    with session_for(server.url, concurrency=3) as session:
        answered, _ = send(session, calls(9))
    assert {k: r.json() for k, r in answered.items()} == {i: {"n": i} for i in range(9)}


def test_an_answer_split_across_writes_waits_for_its_end():
    release = threading.Event()
    # The head in two pieces, then the body in two: the answer is read once all is here.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def slow_server() -> None:
        listener.settimeout(TIMEOUT)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Len")
            release.wait(TIMEOUT)
            conn.sendall(b'gth: 7\r\n\r\n{"n":')
            time.sleep(0.05)
            conn.sendall(b"0}")
            time.sleep(0.2)

    thread = threading.Thread(target=slow_server, daemon=True)
    thread.start()
    try:
        with session_for(f"http://127.0.0.1:{port}", concurrency=1) as session:
            threading.Timer(0.05, release.set).start()
            answered, _ = send(session, calls(1))
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert answered[0].json() == {"n": 0}


def test_a_call_with_no_answer_in_time_is_left_and_the_others_go_on(serve):
    def reply(seen: Seen) -> Any:
        if json.loads(seen.body)["n"] == 0:
            server.release.wait(TIMEOUT * 3)  # stalls until the test ends
            return None
        return echo(seen)

    server = serve(reply)
    started = time.monotonic()
    with session_for(server.url, concurrency=2, timeout=0.3) as session:
        answered, others = send(session, calls(5))
    assert sorted(answered) == [1, 2, 3, 4]
    failure = others[0].outcome
    assert isinstance(failure, wire.Failure) and failure.kind == "ReadTimeout" and failure.sent
    assert time.monotonic() - started < TIMEOUT  # not waited on for ever


def test_a_server_that_is_not_there_leaves_every_call_and_the_session_says_why():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once the probe is closed
    with session_for(f"http://127.0.0.1:{port}", concurrency=3, max_attempts=1) as session:
        answered, others = send(session, calls(10))
        assert answered == {} and 1 <= len(others) <= 3  # stopped at the first failure
        for first in others.values():
            assert isinstance(first.outcome, wire.Failure) and not first.outcome.sent
        assert session.stats.as_dict()["requests"] == len(others)
        with pytest.raises(Exception, match="cannot connect"):
            session.request("POST", "/items", json={})


def test_over_tls_calls_are_answered_and_an_untrusted_server_answers_none(serve, certificate):
    import ssl

    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = serve(echo, tls=context)
    with session_for(server.url, concurrency=3, verify=str(cert)) as session:
        assert sorted(send(session, calls(9))[0]) == list(range(9))
        session.request("GET", "/x")  # the TLS lanes, back in blocking mode, still work
    assert server.connections == 3
    with session_for(server.url, concurrency=2, verify=True) as session:
        answered, others = send(session, calls(4))
        assert answered == {} and others
        with pytest.raises(errors.PermanentApiError, match="TLS certificate not trusted"):
            session.request("POST", "/items", first=others[min(others)])


def test_an_expired_login_is_left_for_request_which_logs_in_again(serve):
    class Login:
        def __init__(self) -> None:
            self.count = 0

        def login(self, session: http.HttpSession) -> dict[str, str]:
            self.count += 1
            return {"Authorization": f"Bearer token-{self.count}"}

        def logout(self, session: http.HttpSession, headers: Any) -> None:
            pass

        def is_expired(self, response: http.HttpResponse) -> bool:
            return response.status == 401

    def reply(seen: Seen) -> bytes:
        if b"token-1" in seen.head:
            return answer(401, b"{}")
        return echo(seen)

    server = serve(reply)
    login = Login()
    session = http.HttpSession(
        http.HttpSettings(base_url=server.url, connection="local", timeout=TIMEOUT),
        authenticator=login,
        sleep=lambda seconds: None,
    )
    with session:
        answered, others = send(session, calls(3))
        assert answered == {} and 0 in others  # all three went at once
        # Going on from the refused attempt logs in again (once) and sends it again.
        response = session.request("POST", "/items", json={"n": 0}, first=others[0])
        assert response.json() == {"n": 0}
    assert login.count == 2


def test_a_session_over_an_injected_transport_sends_nothing_at_once():
    import httpx

    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    session = http.HttpSession(
        http.HttpSettings(base_url="http://127.0.0.1:9", connection="local"),
        transport=transport,
    )
    with session:
        assert not session.can_send_many
        assert send(session, calls(3)) == ({}, {})
        assert session.stats.as_dict()["requests"] == 0


def test_no_free_slot_means_nothing_is_sent(serve):
    server = serve(echo)
    with session_for(server.url, concurrency=1) as session:
        session._slots.acquire()  # another thread's call under way
        try:
            assert send(session, calls(2)) == ({}, {})
        finally:
            session._slots.release()
    assert server.seen == []
