"""``HttpSession.send_many``: many calls from one thread, on raw servers on 127.0.0.1.

What it promises: each call is sent at most once, up to ``most`` (or ``concurrency``) at a
time as slots are free, from the calling thread alone, and taken from the caller only when
a connection is free for it; ``on_answer`` gets exactly the calls answered with a status in
their ``ok``. Every other call that was sent (an error or unexpected status, an expired
login, an answer lost, cut short or late, a connection that will not open or be trusted) is
handed back to ``on_other`` with its first attempt, for ``request(first=...)`` to carry on
from, and no call is taken after it. A call that gets neither was never sent, and the
session stays fit for more.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from controller import errors
from controller.clients import http, lanes, multiplexing, wire
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
    session: http.HttpSession, items: Iterable[tuple[int, http.Call]]
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


def test_no_slot_free_in_time_means_nothing_is_sent(serve):
    server = serve(echo)
    with session_for(server.url, concurrency=1, timeout=0.2) as session:
        session._slots.acquire()  # another thread's call under way, for longer than that
        try:
            assert send(session, calls(2)) == ({}, {})
        finally:
            session._slots.release()
    assert server.seen == []


def test_it_waits_for_its_first_slot_then_sends(serve):
    server = serve(echo)
    with session_for(server.url, concurrency=2) as session:
        session._slots.acquire()
        session._slots.acquire()  # every slot busy with other threads' calls
        release = threading.Timer(0.05, session._slots.release)
        release.start()
        try:
            answered, others = send(session, calls(4))
        finally:
            release.join()
            session._slots.release()
    assert sorted(answered) == [0, 1, 2, 3] and others == {}
    assert server.connections == 1  # the one slot it got: one lane


def test_most_leaves_the_other_slots_to_other_threads_calls(serve):
    def slow(seen: Seen) -> bytes:
        time.sleep(0.05)
        return echo(seen)

    server = serve(slow)
    order: list[str] = []
    with session_for(server.url, concurrency=2) as session:
        started = threading.Event()

        def other() -> None:
            assert started.wait(TIMEOUT)
            session.request("GET", "/other")
            order.append("other call")

        thread = threading.Thread(target=other)
        thread.start()

        def items() -> Iterator[tuple[int, http.Call]]:
            for item in calls(10):  # 10 x 50 ms on one lane
                started.set()
                yield item

        answered, _ = send_most(session, items(), most=1)
        order.append("send_many")
        thread.join(TIMEOUT)
    assert sorted(answered) == list(range(10))
    assert order == ["other call", "send_many"]  # it did not wait for the run to end


def test_the_run_grows_as_other_threads_calls_end(serve):
    def slow(seen: Seen) -> bytes:
        time.sleep(0.02)
        return echo(seen)

    server = serve(slow)
    with session_for(server.url, concurrency=4) as session:
        for _ in range(4):
            session._slots.acquire()  # every slot busy with other threads' calls
        releases = [threading.Timer(0.01 * n, session._slots.release) for n in (1, 2, 3, 4)]
        for release in releases:
            release.start()
        try:
            answered, others = send(session, calls(40))  # 40 x 20 ms: long past the releases
        finally:
            for release in releases:
                release.join()
    assert sorted(answered) == list(range(40)) and others == {}
    assert server.connections == 4  # it took each slot as it came free
    assert session._slots.acquire(blocking=False)  # and gave them all back


def test_lanes_are_put_back_as_they_were_when_a_run_breaks_as_it_starts(serve, monkeypatch):
    server = serve(echo)
    with session_for(server.url, concurrency=1) as session:
        session.request("POST", "/items", json={"n": 0})  # the lane is open and idle
        monkeypatch.setattr(multiplexing._Run, "_watch", _broken)
        with pytest.raises(RuntimeError, match="broken"):
            send(session, calls(1))
        monkeypatch.undo()
        (lane,) = session._wire._lanes  # type: ignore[union-attr]
        sock = lane.current_socket
        assert sock is not None and sock.gettimeout() == TIMEOUT  # blocking again
        assert session.request("POST", "/items", json={"n": 1}).json() == {"n": 1}
    assert server.connections == 1  # the same connection throughout


def _broken(*args: Any) -> None:
    raise RuntimeError("broken")


def send_most(
    session: http.HttpSession, items: Iterable[tuple[int, http.Call]], *, most: int
) -> tuple[dict[int, http.HttpResponse], dict[int, http.FirstAttempt]]:
    answered: dict[int, http.HttpResponse] = {}
    others: dict[int, http.FirstAttempt] = {}
    session.send_many(items, answered.__setitem__, others.__setitem__, most=most)
    return answered, others


# -- helpers for the tests below ----------------------------------------------------------


def taking(
    items: Iterable[tuple[int, http.Call]], taken: list[int]
) -> Iterator[tuple[int, http.Call]]:
    """``items``, noting in ``taken`` each one as ``send_many`` takes it."""
    for key, call in items:
        taken.append(key)
        yield key, call


@contextlib.contextmanager
def one_connection(script: Callable[[socket.socket], None]) -> Iterator[str]:
    """A server on 127.0.0.1 (its URL) that accepts one connection and runs ``script`` on it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def run() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # nobody came: the test says why
            return
        with conn:
            conn.settimeout(TIMEOUT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece on its own
            script(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join(TIMEOUT * 3)
        listener.close()


# -- answers read to the close, and cut short ----------------------------------------------


def test_an_answer_read_to_the_close_is_read_whole_and_its_lane_opened_afresh(serve):
    def reply(seen: Seen) -> bytes:
        # No Content-Length, not chunked: the body ends where the server closes (hang_up).
        padding = b" " * 300_000 if json.loads(seen.body)["n"] == 1 else b""  # many reads
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + seen.body + padding

    server = serve(reply, hang_up=True)
    with session_for(server.url, concurrency=2) as session:
        answered, others = send(session, calls(5))
        assert others == {}
        assert {k: r.json() for k, r in answered.items()} == {i: {"n": i} for i in range(5)}
        assert len(answered[1].body) == len(b'{"n":1}') + 300_000
        # A later run opens its lanes afresh too: each answer closed its connection.
        assert sorted(send(session, calls(2))[0]) == [0, 1]
    assert server.connections == 7  # one per call: none was reused after its close
    assert len(server.seen) == 7


CUT_SHORT = {
    "body": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
        "peer closed connection without sending complete message body",
    ),
    "chunk": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "peer closed connection without sending complete message body",
    ),
    "head": (b"HTTP/1.1 200 OK\r\nContent-Le", "peer closed connection in the answer's head"),
}


@pytest.mark.parametrize("cut", CUT_SHORT)
def test_an_answer_cut_short_by_the_close_is_handed_back_as_a_lost_answer(serve, cut):
    cut_answer, words = CUT_SHORT[cut]
    cuts: list[int] = []

    def reply(seen: Seen) -> bytes:
        if not cuts:  # the first answer only: the call made again is answered whole
            cuts.append(1)
            return cut_answer
        return echo(seen)

    server = serve(reply, hang_up=True)
    with session_for(server.url, concurrency=1, max_attempts=2) as session:
        answered, others = send(session, calls(3))
        assert answered == {} and list(others) == [0]  # and none taken after it
        failure = others[0].outcome
        assert isinstance(failure, wire.Failure)
        assert failure.kind == "RemoteProtocolError" and failure.sent
        assert words in str(failure)
        response = session.request(
            "POST", "/items", json={"n": 0}, idempotent=True, first=others[0]
        )
        assert response.json() == {"n": 0}
    assert len(server.seen) == 2


# -- connections that do not open -----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        errno.ENETUNREACH,  # a route that is down
        errno.EAGAIN,  # Linux: no local port free (not a connect under way, as on Windows)
    ],
)
def test_a_connection_refused_at_once_is_handed_back_as_not_sent(serve, monkeypatch, error):
    server = serve(echo)
    with session_for(server.url, concurrency=3, max_attempts=2) as session:
        with monkeypatch.context() as patched:
            # connect_ex says so at once, not later through SO_ERROR.
            patched.setattr(socket.socket, "connect_ex", lambda sock, address: error)
            answered, others = send(session, calls(5))
        assert answered == {} and list(others) == [0]  # failed before the next was taken
        failure = others[0].outcome
        assert isinstance(failure, wire.Failure)
        assert failure.kind == "ConnectError" and not failure.sent
        assert os.strerror(error) in str(failure)
        assert server.connections == 0
        # request() goes on from it, on the threaded wire, and the server answers.
        response = session.request("POST", "/items", json={"n": 0}, first=others[0])
        assert response.json() == {"n": 0}
    assert len(server.seen) == 1


def test_a_server_gone_between_runs_leaves_the_next_call_not_sent(serve):
    server = serve(echo, hang_up=True)
    with session_for(server.url, concurrency=1, max_attempts=1) as session:
        assert sorted(send(session, calls(1))[0]) == [0]
        assert server.hung_up.wait(TIMEOUT)
        server.close()  # nothing listens on its port any more: connections are refused
        answered, others = send(session, calls(3))
    assert answered == {} and list(others) == [0]
    failure = others[0].outcome
    assert isinstance(failure, wire.Failure)
    assert failure.kind == "ConnectError" and not failure.sent
    assert len(server.seen) == 1


def test_a_tls_handshake_that_never_comes_is_a_connect_timeout():
    # The kernel completes the TCP connections in its backlog; nobody ever answers the hello.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with session_for(url, concurrency=2, timeout=0.3, verify=False) as session:
            answered, others = send(session, calls(5))
        elapsed = time.monotonic() - started
    assert answered == {}
    assert sorted(others) == [0, 1]  # both under way, each told; none taken after
    for first in others.values():
        failure = first.outcome
        assert isinstance(failure, wire.Failure)
        assert failure.kind == "ConnectTimeout" and not failure.sent
    assert elapsed < 5  # bounded by the timeout, not waited on for ever


def test_a_connection_that_does_not_open_in_time_is_a_connect_timeout():
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: one connection fills its queue
        address = listener.getsockname()
        stack.enter_context(socket.create_connection(address, timeout=TIMEOUT))
        probe = stack.enter_context(socket.socket())
        probe.setblocking(False)
        probe.connect_ex(address)
        if select.select([], [probe], [], 0.2)[1]:
            pytest.skip("this kernel does not leave a connection to a full queue unopened")
        started = time.monotonic()
        with session_for(f"http://127.0.0.1:{address[1]}", concurrency=1, timeout=0.3) as session:
            answered, others = send(session, calls(3))
        elapsed = time.monotonic() - started
    assert answered == {} and list(others) == [0]
    failure = others[0].outcome
    assert isinstance(failure, wire.Failure)
    assert failure.kind == "ConnectTimeout" and not failure.sent
    assert elapsed < 5


# -- keep-alive expiry ----------------------------------------------------------------------


def test_a_lane_idle_past_the_keepalive_expiry_during_a_run_is_opened_afresh(serve, monkeypatch):
    monkeypatch.setattr(lanes, "KEEPALIVE_EXPIRY", 0.1)
    server = serve(echo)

    def items() -> Iterator[tuple[int, http.Call]]:
        for key, call in calls(2):
            if key == 1:
                time.sleep(0.3)  # the caller is busy: the lane, idle since call 0, expires
            yield key, call

    with session_for(server.url, concurrency=1) as session:
        answered, others = send(session, items())
    assert sorted(answered) == [0, 1] and others == {}
    assert [seen.connection for seen in server.seen] == [1, 2]


def test_a_lane_left_unused_by_a_run_keeps_its_idle_time_and_expires(serve, monkeypatch):
    server = serve(echo)
    with session_for(server.url, concurrency=2) as session:
        assert sorted(send(session, calls(2))[0]) == [0, 1]  # both lanes open
        assert server.connections == 2
        time.sleep(0.8)
        assert sorted(send(session, calls(1))[0]) == [0]  # on one lane; the other rests
        used = server.seen[-1].connection
        # Past this, the lane unused since the first run has expired; the one just used
        # has not (its idle time started at its answer, an instant ago).
        monkeypatch.setattr(lanes, "KEEPALIVE_EXPIRY", 0.4)
        answered, others = send(session, calls(2))
    assert sorted(answered) == [0, 1] and others == {}
    assert server.connections == 3
    assert sorted(seen.connection for seen in server.seen[-2:]) == [used, 3]


# -- what sends nothing, and what stops taking calls ----------------------------------------


def test_a_rate_limited_session_sends_nothing_at_once(serve):
    server = serve(echo)
    taken: list[int] = []
    with session_for(server.url, rate_limit=100.0) as session:
        assert not session.can_send_many  # its pauses would stall every exchange under way
        assert send(session, taking(calls(3), taken)) == ({}, {})
        assert session.stats.as_dict()["requests"] == 0
    assert taken == [] and server.seen == []


@pytest.mark.parametrize(
    ("status", "ok"),
    [(200, (201,)), (201, (200, 204)), (302, http.OK_STATUSES), (404, http.OK_STATUSES)],
    ids=["200-not-ok", "201-not-ok", "redirect", "not-found"],
)
def test_an_answer_not_in_the_calls_ok_is_handed_back_with_its_response(serve, status, ok):
    server = serve(lambda seen: answer(status, b'{"why":"this"}'))
    items = [(i, http.Call("POST", "/items", {"n": i}, ok=ok)) for i in range(3)]
    with session_for(server.url, concurrency=1, max_attempts=3) as session:
        answered, others = send(session, items)
        assert answered == {} and list(others) == [0]
        first = others[0]
        response = first.outcome
        assert isinstance(response, http.HttpResponse)
        assert response.status == status and response.json() == {"why": "this"}
        assert first.generation == 0
        # Not an answer to retry: request() raises it from the first attempt, sending nothing.
        with pytest.raises(errors.PermanentApiError, match=f"HTTP {status}"):
            session.request("POST", "/items", json={"n": 0}, ok=ok, first=first)
    assert len(server.seen) == 1


@pytest.mark.parametrize("trouble", [answer(500, b"{}"), RESET], ids=["500", "reset"])
def test_no_call_is_taken_after_one_not_plainly_done(serve, trouble):
    server = serve(lambda seen: trouble)
    taken: list[int] = []
    with session_for(server.url, concurrency=1) as session:
        answered, others = send(session, taking(calls(5), taken))
    # Taking a call may start it (apply reports it as begun): the next is never even taken.
    assert taken == [0]
    assert answered == {} and list(others) == [0]
    assert len(server.seen) == 1


# -- deadlines ------------------------------------------------------------------------------


def test_an_answer_that_trickles_in_longer_than_the_timeout_is_read(serve):
    pieces = [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 7\r\n", b"\r\n", b'{"n', b'":', b"0}"]

    def trickle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client gave up: the test says so
            conn.recv(65536)
            for piece in pieces:  # 0.9 s in all; never 0.5 s without a piece
                time.sleep(0.15)
                conn.sendall(piece)
            conn.recv(65536)  # until the client closes (or the server's own timeout)

    with one_connection(trickle) as url, session_for(url, concurrency=1, timeout=0.5) as session:
        answered, others = send(session, calls(1))
    assert others == {}
    assert answered[0].json() == {"n": 0}


# -- a lane closed while the caller was busy ------------------------------------------------


# The selector sees such a close only when it next runs, which it does not between an
# answer and the next call taken; so each lane is checked again just before it is used.
def test_a_lane_the_server_closed_while_the_caller_was_busy_is_opened_afresh(serve):
    server = serve(echo, hang_up=True)  # closes each connection after its answer

    def items() -> Iterator[tuple[int, http.Call]]:
        for key, call in calls(2):
            if key == 1:  # the caller is busy while the server closes call 0's connection
                assert server.hung_up.wait(TIMEOUT)
                time.sleep(0.05)  # the close has reached our side
            yield key, call

    with session_for(server.url, concurrency=1) as session:
        answered, others = send(session, items())
    assert others == {}, {key: str(first.outcome) for key, first in others.items()}
    assert sorted(answered) == [0, 1]


# -- the caller's own errors ----------------------------------------------------------------


@pytest.mark.parametrize("callback", ["on_answer", "on_other"])
def test_an_oserror_raised_by_a_callback_comes_out_as_itself(serve, callback):
    resets: list[int] = []

    def reply(seen: Seen) -> Any:
        if callback == "on_other" and not resets:  # the first call only
            resets.append(1)
            return RESET  # a lost answer: handed to on_other
        return echo(seen)

    server = serve(reply)
    mine = ConnectionResetError("the caller's own")  # an OSError, as a wire failure's cause

    def raising(key: int, outcome: Any) -> None:
        raise mine

    def unexpected(key: int, outcome: Any) -> None:
        pytest.fail(f"{key}: {outcome}")

    on_answer, on_other = (
        (raising, unexpected) if callback == "on_answer" else (unexpected, raising)
    )
    with session_for(server.url, concurrency=2) as session:
        with pytest.raises(ConnectionResetError) as raised:
            session.send_many(calls(4), on_answer, on_other)
        assert raised.value is mine  # not a wire.Failure, not handed to on_other
        # The slots were given back and the lanes left fit: another run is answered.
        assert sorted(send(session, calls(3, "PUT"))[0]) == [0, 1, 2]
