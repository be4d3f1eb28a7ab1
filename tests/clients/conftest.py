"""Fakes for the client tests: a fake clock, and a small in-memory Era behind MockTransport.

The fake Era is deliberately tiny (the real emulator lives in controller/emulator and has
its own tests); it exists so a unit test can script one fault at a time and count calls.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from controller.clients import era, http

ERA_AUTH = {"domain": "test.era", "login": "converge", "password": "s3cret-era-pass"}


class FakeClock:
    """``clock`` and ``sleep`` for a session: sleeping advances the clock, never waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def make_session(fake_clock: FakeClock) -> Callable[..., http.HttpSession]:
    """``make_session(handler, authenticator=None, **settings)`` on the fake clock."""
    sessions: list[http.HttpSession] = []

    def make(
        handler: Handler, *, authenticator: http.Authenticator | None = None, **settings: Any
    ) -> http.HttpSession:
        values: dict[str, Any] = {"base_url": "http://era.test/era", "connection": "era-main"}
        values.update(settings)
        session = http.HttpSession(
            http.HttpSettings(**values),
            authenticator=authenticator,
            transport=httpx.MockTransport(handler),
            sleep=fake_clock.sleep,
            clock=fake_clock.clock,
            random=lambda: 1.0,  # the top of the jitter range: delays are predictable
            secrets=["s3cret-era-pass"],
        )
        sessions.append(session)
        return session

    return make


@dataclass
class FakeEra:
    """Roleapps in a dict, Era's login and errors, and scripted faults."""

    roleapps: dict[str, dict[str, Any]] = field(default_factory=dict)
    page_cap: int | None = None
    tokens: set[str] = field(default_factory=set)
    logins: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    # (method, path suffix) → list of faults to play once each: an int status, or "drop"
    # (do the work, then lose the answer), or "drop-before" (lose it without doing it).
    faults: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    password: str = ERA_AUTH["password"]
    archives: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fault(self, method: str, path: str, *plays: Any) -> None:
        self.faults.setdefault((method, path), []).extend(plays)

    def expire(self) -> None:
        with self.lock:
            self.tokens.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/era")
        with self.lock:
            self.calls.append((request.method, path))
            plays = self.faults.get((request.method, path))
            play = plays.pop(0) if plays else None
        if isinstance(play, int):
            return _error(play, "scripted failure")
        if play == "drop-before":
            raise httpx.ConnectError("Connection refused")
        response = self._handle(request, path)
        if play == "drop":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return response

    def _handle(self, request: httpx.Request, path: str) -> httpx.Response:
        if path == era.SESSIONS and request.method == "POST":
            body = json.loads(request.content)
            if body.get("pwd") != self.password:
                return _error(401, f"bad password {body.get('pwd')} for {body.get('login')}")
            with self.lock:
                self.logins += 1
                token = f"token-{self.logins}-abcdef"
                self.tokens.add(token)
            return httpx.Response(200, json={"session_token": token})
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            return _error(401, "no session")
        if path == era.LOGOUT:
            self.tokens.discard(token)
            return httpx.Response(204)
        if path == era.ROLEAPPS:
            return self._collection(request)
        rid = path.removeprefix(era.ROLEAPPS + "/")
        if rid.endswith("/attachment") and request.method == "PUT":
            rid = rid.removesuffix("/attachment")
            self.archives[rid] = (request.headers.get("content-type", ""), request.content)
            return httpx.Response(204)
        if request.method == "GET":
            obj = self.roleapps.get(rid)
            return httpx.Response(200, json=obj) if obj else _error(404, "not found")
        if request.method == "PATCH":
            if rid not in self.roleapps:
                return _error(404, "not found")
            self.roleapps[rid].update(json.loads(request.content))
            return httpx.Response(200, json=self.roleapps[rid])
        if request.method == "DELETE":
            return httpx.Response(204) if self.roleapps.pop(rid, None) else _error(404, "nf")
        return _error(405, "method not allowed")

    def _collection(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            offset = int(request.url.params.get("offset", "0"))
            limit = int(request.url.params.get("limit", "100"))
            if self.page_cap is not None:
                limit = min(limit, self.page_cap)
            items = list(self.roleapps.values())[offset : offset + limit]
            mask = request.url.params.get("mask")
            if mask:
                keep = mask.split(",")
                items = [{k: v for k, v in o.items() if k in keep} for o in items]
            return httpx.Response(200, json=items)
        if request.method == "POST":
            body = json.loads(request.content)
            if "folder" not in body:
                return _error(400, "folder is required")
            if body["id"] in self.roleapps:
                return _error(409, "id already exists")
            self.roleapps[body["id"]] = body
            return httpx.Response(200, json=body)
        if request.method == "LOOKUP":
            rid = json.loads(request.content)
            if rid in self.roleapps:
                return httpx.Response(200, json=[rid])
            return _error(404, "Lookup failed")
        return _error(405, "method not allowed")


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error_code": 1000 + status, "error_message": message})


@pytest.fixture
def fake_era() -> FakeEra:
    return FakeEra()


@pytest.fixture
def make_era(fake_era: FakeEra, fake_clock: FakeClock) -> Callable[..., era.EraClient]:
    """``make_era(**settings)``: an EraClient talking to ``fake_era`` on the fake clock."""

    def make(**settings: Any) -> era.EraClient:
        values: dict[str, Any] = {"base_url": "http://era.test/era", "connection": "era-main"}
        values.update(settings)
        return era.EraClient.connect(
            http.HttpSettings(**values),
            dict(ERA_AUTH),
            transport=httpx.MockTransport(fake_era),
            sleep=fake_clock.sleep,
            clock=fake_clock.clock,
            random=lambda: 1.0,
        )

    return make
