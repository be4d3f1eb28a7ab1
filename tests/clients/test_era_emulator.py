"""EraClient against the real Era emulator over loopback HTTP (127.0.0.1, port 0).

Unlike test_era.py (a scripted fake behind MockTransport) these go through real sockets,
keep-alive and the emulator's own paging, sessions and fault rules.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller import errors
from controller.clients import era, http, wire
from controller.emulator import era as era_emulator
from controller.emulator import server as emulator_server
from controller.emulator import storage


@pytest.fixture
def emulator() -> Iterator[emulator_server.EmulatorServer]:
    api = era_emulator.EraApi(storage.Storage(None))
    server = emulator_server.EmulatorServer([api]).start()
    try:
        yield server
    finally:
        server.stop()


def control(server: emulator_server.EmulatorServer, action: str, **payload: Any) -> Any:
    return server.apis["era"].control(action, payload)


@pytest.fixture
def connect(emulator) -> Iterator[Callable[..., era.EraClient]]:
    clients: list[era.EraClient] = []

    def make(*, auth: dict[str, str] | None = None, **settings: Any) -> era.EraClient:
        values: dict[str, Any] = {
            "base_url": emulator.url_for("era"),
            "connection": "era-main",
            "timeout": 10.0,
            "backoff_base": 0.01,
        }
        values.update(settings)
        credentials = auth or emulator.apis["era"].credentials()
        client = era.EraClient.connect(http.HttpSettings(**values), credentials)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def roleapps(count: int) -> list[dict[str, Any]]:
    return [
        {"id": str(uuid.UUID(int=n + 1)), "folder": f"app{n:05d}", "title": f"App {n}"}
        for n in range(count)
    ]


def test_capped_pages_with_1200_plus_objects(emulator, connect):
    seeded = control(emulator, "seed", roleapps=roleapps(1234))["ids"]
    control(emulator, "set_page_cap", page_cap=100)

    client = connect(concurrency=4)
    listed = client.list_roleapps(fields=["folder", "title", "ext.lwt"], page_size=500)

    assert sorted(o["id"] for o in listed) == sorted(seeded)
    assert len(listed) == 1234
    assert set(listed[0]) <= {"id", "folder", "title", "ext"}
    assert client.session.stats.logins == 1


def test_an_empty_listing(emulator, connect):
    assert connect().list_roleapps() == []


def test_sessions_expired_mid_listing_are_renewed_once(emulator, connect):
    control(emulator, "seed", roleapps=roleapps(600))
    control(emulator, "set_page_cap", page_cap=50)
    client = connect(concurrency=4)
    client.lookup("warm-up")  # log in before the listing starts
    original = client._page
    pages: list[int] = []
    lock = threading.Lock()

    def page_then_expire(offset: int, params: Any) -> list[dict[str, Any]]:
        with lock:
            pages.append(offset)
            if len(pages) == 4:
                control(emulator, "expire_sessions")
        return original(offset, params)

    client._page = page_then_expire  # type: ignore[method-assign]
    listed = client.list_roleapps(page_size=50)

    assert len({o["id"] for o in listed}) == 600
    assert client.session.stats.logins == 2  # every thread saw 401; one new login
    assert control(emulator, "stats")["logins"] == 2


def test_a_create_whose_answer_is_dropped_makes_no_duplicate(emulator, connect):
    control(emulator, "drop_after_work", method="POST", path_regex="/roleapps$", times=1)
    client = connect()
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, "converge:era-main/chat"))

    created = client.create({"id": rid, "folder": "chat", "title": "Chat"})

    assert created["id"] == rid
    listed = client.list_roleapps()
    assert [o["id"] for o in listed] == [rid]
    calls = control(emulator, "stats")["calls"]
    assert calls["POST /rest/v1/domain/roleapps"] == 1
    assert calls["LOOKUP /rest/v1/domain/roleapps"] == 1


def test_crud_and_archive(emulator, connect):
    client = connect()
    rid = str(uuid.uuid4())
    created = client.create({"id": rid, "folder": "f1", "title": "T"})
    assert created["folder"] == "f1"
    assert client.lookup(rid)
    assert client.update(rid, {"title": "U"})["title"] == "U"
    client.upload_archive(rid, b"PK\x03\x04 zip bytes")
    hasha = client.get(rid)["opts"]["attachment_info"]["hasha"]
    assert hasha.startswith("md5;")
    client.delete(rid)
    client.delete(rid)
    assert client.get(rid) is None
    assert not client.lookup(rid)


def test_errors_name_the_call_and_the_server_message(emulator, connect):
    with pytest.raises(errors.PermanentApiError) as caught:
        connect().create({"id": str(uuid.uuid4()), "title": "no folder"})
    message = str(caught.value)
    assert message.startswith("era-main: POST /rest/v1/domain/roleapps: HTTP 400: ")
    assert "folder" in message


def test_a_bad_password_is_one_login_attempt_and_never_shown(emulator, connect):
    auth = {"domain": "sandbox.era", "login": "converge", "password": "wrong-password-123"}
    client = connect(auth=auth, concurrency=4)

    def attempt() -> None:
        with pytest.raises(errors.AuthError) as caught:
            client.get("x")
        assert "wrong-password-123" not in str(caught.value)

    workers = [threading.Thread(target=attempt) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert control(emulator, "stats")["failed_logins"] == 1


def test_injected_503s_are_retried(emulator, connect):
    control(emulator, "seed", roleapps=roleapps(3))
    control(emulator, "fail", method="GET", path_regex="/roleapps$", status=503, times=2)
    client = connect()
    assert len(client.list_roleapps()) == 3
    assert client.session.stats.retries == 2


def test_close_logs_out(emulator, connect):
    client = connect()
    client.lookup("x")
    assert control(emulator, "stats")["sessions"] == 1
    client.close()
    assert control(emulator, "stats")["sessions"] == 0


def write_all(
    client: era.EraClient, writes: list[era.RoleappWrite]
) -> tuple[list[int], dict[int, http.FirstAttempt]]:
    done: list[int] = []
    left: dict[int, http.FirstAttempt] = {}
    client.write_many(enumerate(writes), done.append, left.__setitem__)
    return sorted(done), left


def test_many_writes_at_once_create_update_and_delete(emulator, connect):
    client = connect(concurrency=4)
    apps = roleapps(30)
    assert write_all(client, [era.RoleappWrite.create(a) for a in apps]) == (list(range(30)), {})
    changes = [era.RoleappWrite.update(a["id"], {"title": f"New {n}"}) for n, a in enumerate(apps)]
    assert write_all(client, changes) == (list(range(30)), {})
    assert sorted(o["title"] for o in client.list_roleapps()) == sorted(
        f"New {n}" for n in range(30)
    )
    gone = [era.RoleappWrite.delete(a["id"]) for a in apps[:10]] + [
        era.RoleappWrite.delete(str(uuid.uuid4()))  # already gone is done too
    ]
    assert write_all(client, gone) == (list(range(11)), {})
    assert len(client.list_roleapps()) == 20
    calls = control(emulator, "stats")["calls"]
    assert calls["POST /rest/v1/domain/roleapps"] == 30  # each write once
    assert calls["PATCH /rest/v1/domain/roleapps/{id}"] == 30
    assert client.session.stats.logins == 1


def test_a_write_left_by_write_many_is_finished_from_its_first_attempt(emulator, connect):
    client = connect(concurrency=1)
    apps = roleapps(3)
    # The first create is made, then its answer lost: the others are not sent after it.
    control(emulator, "drop_after_work", method="POST", path_regex="/roleapps$", times=1)
    done, left = write_all(client, [era.RoleappWrite.create(a) for a in apps])
    assert done == [] and list(left) == [0]
    first = left[0].outcome
    assert isinstance(first, wire.Failure) and first.sent
    # Going on from that attempt: the lost create is looked up and found, not repeated.
    assert client.create(apps[0], first=left[0])["id"] == apps[0]["id"]
    calls = control(emulator, "stats")["calls"]
    assert calls["POST /rest/v1/domain/roleapps"] == 1
    assert calls["LOOKUP /rest/v1/domain/roleapps"] == 1
    assert [o["id"] for o in client.list_roleapps()] == [apps[0]["id"]]
