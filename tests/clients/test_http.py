"""HttpSession against scripted MockTransport handlers: retries, login, errors, redaction."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from controller import errors
from controller.clients import http, ratelimit, retrying

TOKEN = "tok-0123456789abcdef"


def scripted(*answers: Any) -> tuple[Callable[[httpx.Request], httpx.Response], list[str]]:
    """A handler playing ``answers`` in order (the last one repeats); records methods."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers[min(len(calls), len(answers) - 1)]
        calls.append(request.method)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return httpx.Response(answer, json={"n": len(calls)})
        return answer

    return handler, calls


class TokenAuth:
    """A test authenticator: POST /login → TOKEN; 401 means expired."""

    def __init__(self) -> None:
        self.logins = 0
        self.logouts = 0

    def login(self, session: http.HttpSession) -> dict[str, str]:
        self.logins += 1
        token = session.request("POST", "/login", authenticated=False).json()["token"]
        return {"Authorization": f"Bearer {token}"}

    def logout(self, session: http.HttpSession, headers: Any) -> None:
        self.logouts += 1
        session.request("DELETE", "/login", headers=headers, authenticated=False)

    def is_expired(self, response: http.HttpResponse) -> bool:
        return response.status == 401


# -- retries ---------------------------------------------------------------------------


def test_get_is_retried_on_503_with_full_jitter_backoff(make_session, fake_clock):
    handler, calls = scripted(503, 503, 503, 200)
    session = make_session(handler)

    response = session.request("GET", "/x")

    assert response.status == 200
    assert len(calls) == 4
    assert fake_clock.sleeps == pytest.approx([0.2, 0.4, 0.8])  # random()=1.0: the ceiling
    assert session.stats.requests == 4
    assert session.stats.retries == 3


def test_attempts_are_bounded_and_the_last_error_is_transient(make_session):
    handler, calls = scripted(503)
    session = make_session(handler, max_attempts=3)

    with pytest.raises(errors.TransientApiError) as caught:
        session.request("POST", "/rest/v1/x")

    assert len(calls) == 3  # 503 means "not done": repeated even for POST
    assert caught.value.status == 503
    assert not caught.value.maybe_applied


def test_time_budget_ends_retries_before_the_attempt_count(make_session, fake_clock):
    handler, calls = scripted(503)
    session = make_session(handler, max_attempts=50, backoff_base=1.0, max_retry_seconds=5.0)

    with pytest.raises(errors.TransientApiError):
        session.request("GET", "/x")

    assert sum(fake_clock.sleeps) == pytest.approx(5.0)  # 1 + 2 + the 2 left of the budget
    assert len(calls) == 4


def test_retry_after_seconds_is_honoured(make_session, fake_clock):
    handler, calls = scripted(httpx.Response(429, headers={"Retry-After": "7"}), 200)
    session = make_session(handler)

    assert session.request("POST", "/x").status == 200
    assert fake_clock.sleeps == [7.0]
    assert len(calls) == 2


def test_retry_after_http_date_is_honoured(make_session, fake_clock):
    moment = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    when = format_datetime(moment + timedelta(seconds=30), usegmt=True)
    handler, _ = scripted(httpx.Response(429, headers={"Retry-After": when}), 200)
    session = make_session(handler)
    session._now = lambda: moment  # the wall clock the date is compared with

    session.request("GET", "/x")

    assert fake_clock.sleeps == pytest.approx([30.0])


def test_retry_after_is_capped_by_the_remaining_budget(make_session, fake_clock):
    handler, calls = scripted(httpx.Response(429, headers={"Retry-After": "120"}))
    session = make_session(handler, max_retry_seconds=10.0)

    with pytest.raises(errors.TransientApiError) as caught:
        session.request("GET", "/x")

    assert fake_clock.sleeps == [10.0]
    assert len(calls) == 2
    assert caught.value.status == 429
    assert caught.value.retry_after == 120.0


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried_only_when_idempotent(make_session, status):
    handler, calls = scripted(status, 200)
    assert make_session(handler).request("PUT", "/x").status == 200
    assert len(calls) == 2

    handler, calls = scripted(status, 200)
    with pytest.raises(errors.TransientApiError) as caught:
        make_session(handler).request("POST", "/x")
    assert len(calls) == 1
    assert caught.value.maybe_applied


def test_a_500_is_transient_but_not_retried(make_session):
    handler, calls = scripted(500, 200)
    with pytest.raises(errors.TransientApiError) as caught:
        make_session(handler).request("GET", "/x")
    assert len(calls) == 1
    assert caught.value.status == 500


@pytest.mark.parametrize(
    "lost",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
    ids=["read-timeout", "dropped", "read-error"],
)
def test_a_lost_answer_is_retried_only_when_idempotent(make_session, lost):
    handler, calls = scripted(lost, 200)
    assert make_session(handler).request("LOOKUP", "/x", json="id").status == 200
    assert len(calls) == 2

    handler, calls = scripted(lost, 200)
    with pytest.raises(errors.TransientApiError) as caught:
        make_session(handler).request("POST", "/rest/v1/x", json={})
    assert len(calls) == 1
    assert caught.value.maybe_applied
    assert caught.value.method == "POST"
    assert caught.value.path == "/rest/v1/x"
    assert not isinstance(caught.value.__cause__, type(None))  # chained to the httpx error

    handler, calls = scripted(lost, 200)
    assert make_session(handler).request("POST", "/x", idempotent=True).status == 200
    assert len(calls) == 2


@pytest.mark.parametrize(
    "before", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")], ids=str
)
def test_a_failure_before_sending_is_retried_for_every_method(make_session, before):
    handler, calls = scripted(before, before, 200)
    assert make_session(handler).request("POST", "/x").status == 200
    assert len(calls) == 3


def test_connection_failures_exhausted_are_transient_and_not_applied(make_session):
    handler, calls = scripted(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(errors.TransientApiError) as caught:
        make_session(handler, max_attempts=2).request("POST", "/x")
    assert len(calls) == 2
    assert not caught.value.maybe_applied
    assert "cannot connect" in str(caught.value)


def test_other_httpx_errors_are_translated(make_session):
    handler, _ = scripted(httpx.LocalProtocolError("bad header"))
    with pytest.raises(errors.PermanentApiError) as caught:
        make_session(handler).request("GET", "/x")
    assert "LocalProtocolError" in str(caught.value)


# -- errors and bodies -----------------------------------------------------------------


def era_message(response: http.HttpResponse) -> str:
    return response.json()["error_message"]


def test_a_4xx_names_connection_call_status_and_server_message(make_session):
    body = {"error_code": 1400, "error_message": "folder is required"}
    handler, calls = scripted(httpx.Response(400, json=body))
    session = make_session(handler)

    with pytest.raises(errors.PermanentApiError) as caught:
        session.request(
            "POST",
            "/rest/v1/domain/roleapps",
            params={"key": "q-secret"},
            error_message=era_message,
        )

    assert len(calls) == 1
    assert str(caught.value) == (
        "era-main: POST /rest/v1/domain/roleapps: HTTP 400: folder is required"
    )
    assert "q-secret" not in str(caught.value)


def test_the_session_wide_error_message_and_a_broken_one(make_session, fake_clock):
    handler, _ = scripted(httpx.Response(404, text="<html>Not Found</html>"))
    session = http.HttpSession(
        http.HttpSettings(base_url="http://t", connection="c"),
        transport=httpx.MockTransport(handler),
        error_message=era_message,  # raises on this HTML body: the default takes over
    )
    with pytest.raises(errors.PermanentApiError, match=r"c: GET /a: HTTP 404: <html>Not Found"):
        session.request("GET", "/a")


def test_html_where_json_was_expected(make_session):
    page = "<html><body>" + "Gateway login page " * 20 + "</body></html>"
    handler, _ = scripted(httpx.Response(200, text=page, headers={"Content-Type": "text/html"}))
    response = make_session(handler).request("GET", "/rest/v1/x")

    with pytest.raises(errors.PermanentApiError) as caught:
        response.json()

    message = str(caught.value)
    assert message.startswith("era-main: GET /rest/v1/x: HTTP 200: expected JSON, got text/html: ")
    assert len(message.split("text/html: ", 1)[1]) == 100


def test_truncated_json(make_session):
    handler, _ = scripted(httpx.Response(200, content=b'[{"id": "a"}, {"id": "b"'))
    response = make_session(handler).request("GET", "/x")
    with pytest.raises(errors.PermanentApiError, match=r'expected JSON.*\[\{"id": "a"\}'):
        response.json()


def test_a_huge_error_body_is_read_and_shown_only_in_part(make_session):
    handler, _ = scripted(httpx.Response(500, content=b"x" * (5 * 1024 * 1024)))
    with pytest.raises(errors.TransientApiError) as caught:
        make_session(handler).request("GET", "/x")
    assert len(caught.value.server_message) <= 300


def test_secrets_and_tokens_never_reach_a_message(make_session):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"token": TOKEN})
        echo = f"denied for {request.headers['authorization']} with pwd=s3cret-era-pass"
        return httpx.Response(403, json={"error_message": echo})

    session = make_session(handler, authenticator=TokenAuth())
    with pytest.raises(errors.PermanentApiError) as caught:
        session.request("GET", "/x", error_message=era_message)

    text = str(caught.value)
    assert TOKEN not in text
    assert "s3cret-era-pass" not in text
    assert "denied for ***" in text


# -- login -----------------------------------------------------------------------------


def auth_server(*, expire_first: int = 0, always_expired: bool = False):
    """A handler issuing tokens 1, 2, ...; the first ``expire_first`` calls get 401."""
    state = {"logins": 0, "calls": 0}
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            if request.url.path.endswith("/login"):
                if request.method == "DELETE":
                    return httpx.Response(204)
                state["logins"] += 1
                return httpx.Response(200, json={"token": f"{TOKEN}-{state['logins']}"})
            state["calls"] += 1
            if always_expired or state["calls"] <= expire_first:
                return httpx.Response(401, json={"error_message": "no session"})
        return httpx.Response(200, json={"auth": request.headers.get("authorization")})

    return handler, state


def test_login_is_lazy_and_shared(make_session):
    handler, state = auth_server()
    auth = TokenAuth()
    session = make_session(handler, authenticator=auth)
    assert state["logins"] == 0
    session.request("GET", "/public", authenticated=False)
    assert state["logins"] == 0

    first = session.request("GET", "/a").json()
    second = session.request("GET", "/b").json()

    assert first == second == {"auth": f"Bearer {TOKEN}-1"}
    assert session.stats.logins == 1


def test_an_expired_session_is_renewed_once_and_the_call_repeated(make_session):
    handler, state = auth_server(expire_first=1)
    session = make_session(handler, authenticator=TokenAuth(), max_attempts=1)

    assert session.request("POST", "/a").json() == {"auth": f"Bearer {TOKEN}-2"}
    assert state["logins"] == 2


def test_a_session_refused_again_after_a_new_login_gives_up(make_session):
    handler, state = auth_server(always_expired=True)
    session = make_session(handler, authenticator=TokenAuth())

    with pytest.raises(errors.AuthError, match="HTTP 401: no session"):
        session.request("GET", "/a", error_message=era_message)
    assert state["logins"] == 2
    assert state["calls"] == 2


def test_a_refused_login_is_an_auth_error_never_retried(make_session):
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(401, json={"error_message": "bad password s3cret-era-pass"})

    session = make_session(handler, authenticator=TokenAuth())
    for _ in range(3):  # later calls must not try again either: Era bans after 5
        with pytest.raises(errors.AuthError) as caught:
            session.request("GET", "/a", error_message=era_message)
        assert "s3cret-era-pass" not in str(caught.value)
        assert "bad password ***" in str(caught.value)
    assert calls == ["/era/login"]


def test_threads_refused_together_make_one_new_login(make_session):
    threads = 8
    barrier = threading.Barrier(threads, timeout=5)
    lock = threading.Lock()
    logins = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            with lock:
                logins[0] += 1
                return httpx.Response(200, json={"token": f"{TOKEN}-{logins[0]}"})
        if request.headers["authorization"].endswith("-1"):
            barrier.wait()  # every thread holds a 401 for generation 1 at the same time
            return httpx.Response(401)
        return httpx.Response(200)

    session = make_session(handler, authenticator=TokenAuth(), concurrency=threads)
    results: list[int] = []
    workers = [
        threading.Thread(target=lambda: results.append(session.request("GET", "/a").status))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)

    assert results == [200] * threads
    assert logins[0] == 2
    assert session.stats.logins == 2


def test_close_logs_out_and_a_failed_logout_does_not_fail(make_session):
    handler, _ = auth_server()
    auth = TokenAuth()
    session = make_session(handler, authenticator=auth)
    session.close()
    assert auth.logouts == 0  # never logged in: nothing to end

    session = make_session(handler, authenticator=auth)
    session.request("GET", "/a")
    session.close()
    session.close()
    assert auth.logouts == 1

    failing, _ = scripted(httpx.Response(200, json={"token": TOKEN}), 200, 500)
    session = make_session(failing, authenticator=TokenAuth())
    session.request("GET", "/a")
    session.close()  # the DELETE answers 500: swallowed
    with pytest.raises(RuntimeError):
        session.request("GET", "/a")


# -- pacing, stats, logging ------------------------------------------------------------


def test_concurrency_is_bounded_by_the_semaphore(make_session):
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return httpx.Response(200)

    session = make_session(handler, concurrency=2)
    workers = [threading.Thread(target=session.request, args=("GET", "/x")) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert state["peak"] == 2
    assert session.stats.by_method() == {"GET": 8}


def test_token_bucket_paces_requests(fake_clock):
    bucket = ratelimit.TokenBucket(2.0, clock=fake_clock.clock, sleep=fake_clock.sleep)
    waits = [bucket.acquire() for _ in range(5)]
    assert waits == pytest.approx([0, 0, 0.5, 0.5, 0.5])


def test_rate_limit_applies_to_the_session(make_session, fake_clock):
    handler, _ = scripted(200)
    session = make_session(handler, rate_limit=1.0)
    for _ in range(3):
        session.request("GET", "/x")
    assert sum(fake_clock.sleeps) == pytest.approx(2.0)


def test_stats_count_retries_and_logins_by_method(make_session):
    handler, _ = auth_server(expire_first=1)
    session = make_session(handler, authenticator=TokenAuth())
    session.request("GET", "/a")
    assert session.stats.as_dict() == {
        "requests": 4,
        "retries": 0,
        "logins": 2,
        "by_method": {"GET": 2, "POST": 2},
        "retries_by_method": {},
    }


def test_debug_log_has_one_line_per_request_and_no_secrets(make_session, caplog):
    handler, _ = auth_server()
    session = make_session(handler, authenticator=TokenAuth())
    with caplog.at_level(logging.DEBUG, logger="converge.http"):
        session.request("GET", "/rest/v1/a", params={"mask": "id"})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[1].startswith("era-main GET /rest/v1/a 200 ")
    assert not any(TOKEN in line for line in lines)


# -- small pieces ----------------------------------------------------------------------


def test_parse_retry_after():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert retrying.parse_retry_after("3", now=now) == 3.0
    assert retrying.parse_retry_after("Wed, 01 May 2024 12:00:10 GMT", now=now) == 10.0
    assert retrying.parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0
    assert retrying.parse_retry_after("soon", now=now) is None
    assert retrying.parse_retry_after(None, now=now) is None


def test_headers_are_case_insensitive_and_repr_hides_values():
    headers = http.Headers([("Content-Type", "a"), ("Set-Cookie", "x"), ("set-cookie", "y")])
    assert headers["content-type"] == "a"
    assert headers["SET-COOKIE"] == "x, y"
    assert "x, y" not in repr(headers)


def test_a_ca_file_path_becomes_an_ssl_context_without_warnings(tmp_path):
    import certifi

    session = http.HttpSession(
        http.HttpSettings(base_url="https://t", connection="c", verify=certifi.where())
    )
    session.close()


def test_settings_validate_bounds():
    with pytest.raises(ValueError):
        http.HttpSettings(base_url="http://t", connection="c", concurrency=0)


def test_json_body_and_custom_method_reach_the_server(make_session):
    seen: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, json.loads(request.content)))
        return httpx.Response(200, json=["abc"])

    assert make_session(handler).request("lookup", "/x", json="abc").json() == ["abc"]
    assert seen == [("LOOKUP", "abc")]


def test_urls_joined_once_per_path_are_the_same_urls_and_the_cache_is_bounded(
    make_session, monkeypatch
):
    monkeypatch.setattr(http, "URL_CACHE_SIZE", 2)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={})

    session = make_session(handler)
    for path in ["/a", "/a", "/a?secret=1", "/b c", "/b c", "/d", "/d"]:
        session.request("GET", path)
    session.request("GET", "/a", params={"limit": 5})
    base = "http://era.test/era"
    assert seen == [
        *[f"{base}/a"] * 3,
        *[f"{base}/b%20c"] * 2,
        *[f"{base}/d"] * 2,
        f"{base}/a?limit=5",
    ]
    assert len(session._urls) == 2
