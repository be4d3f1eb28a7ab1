"""Fixtures for the emulator tests: a settable clock, an Era API, a served emulator, a client.

Everything binds 127.0.0.1 on an ephemeral port; servers are stopped after each test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from controller.emulator import core, era, server, storage

ERA_CREDENTIALS = era.DEFAULT_CREDENTIALS


class FakeClock:
    """A clock tests move by hand: ``clock.now += 601`` expires an idle session."""

    def __init__(self, start: float = 1_566_913_519.66) -> None:  # 2019-08-27T13:45:19.66Z
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def era_api(clock: FakeClock) -> Iterator[era.EraApi]:
    api = era.EraApi(storage.Storage(), clock=clock)
    yield api
    api.close()


def request(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes = b"",
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    client: str = "127.0.0.1",
) -> core.EmuRequest:
    """An ``EmuRequest`` for calling ``handle`` directly; ``body`` is sent as JSON."""
    payload = json.dumps(body).encode() if body is not None else raw
    return core.EmuRequest(
        method=method,
        path=path,
        query={key: [value] for key, value in (query or {}).items()},
        headers=_Headers(headers or {}),
        body=payload,
        client=client,
    )


class _Headers(dict[str, str]):
    """Case-insensitive ``get``, like the server's ``email.message.Message``."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__({key.lower(): value for key, value in values.items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


def login_token(api: era.EraApi, *, client: str = "127.0.0.1") -> dict[str, str]:
    """Log in through ``handle``; the Bearer header to send afterwards."""
    body = {
        "domain": ERA_CREDENTIALS["domain"],
        "login": ERA_CREDENTIALS["login"],
        "pwd": ERA_CREDENTIALS["password"],
        "session_type": "api",
    }
    response = api.handle(request("POST", "/rest/v1/iam/sessions", body=body, client=client))
    assert response.status == 200, response.body
    return {"Authorization": f"Bearer {json.loads(response.body)['session_token']}"}


@pytest.fixture
def served(clock: FakeClock) -> Iterator[tuple[server.EmulatorServer, era.EraApi]]:
    """An emulator serving one in-memory Era on the fake clock."""
    api = era.EraApi(storage.Storage(), clock=clock)
    emulator = server.EmulatorServer([api]).start()
    yield emulator, api
    emulator.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., httpx.Client]]:
    """``make_client(base_url, login=True)``: an httpx client, logged in to Era if asked."""
    clients: list[httpx.Client] = []

    def make(base_url: str, *, login: bool = True) -> httpx.Client:
        client = httpx.Client(base_url=base_url, timeout=10.0)
        clients.append(client)
        if login:
            body = {
                "domain": ERA_CREDENTIALS["domain"],
                "login": ERA_CREDENTIALS["login"],
                "pwd": ERA_CREDENTIALS["password"],
                "session_type": "api",
            }
            response = client.post("/rest/v1/iam/sessions", json=body)
            assert response.status_code == 200, response.text
            token = response.json()["session_token"]
            client.headers["Authorization"] = f"Bearer {token}"
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def era_client(
    served: tuple[server.EmulatorServer, era.EraApi], make_client: Callable[..., httpx.Client]
) -> httpx.Client:
    """A logged-in client of the served Era."""
    return make_client(served[0].url_for("era"))
