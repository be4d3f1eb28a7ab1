"""The emulated vcda appliance: sessions, the media type, backup tasks over time, seeding."""

from __future__ import annotations

import email.message
import json
from typing import Any

import httpx
import pytest

from controller.emulator import core, server
from controller.emulator.storage import Storage
from controller.emulator.vcda import VcdaApi

ACCEPT = "application/vnd.vmware.h4-v4.7+json;charset=UTF-8"
BACKUP_PASSWORD = "Pa$$w0rD!-backup-file"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def request(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> core.EmuRequest:
    message = email.message.Message()
    for name, value in (headers or {}).items():
        message[name] = value
    payload = b"" if body is None else json.dumps(body).encode()
    return core.EmuRequest(method, path, query or {}, message, payload)


def answer(response: core.EmuResponse) -> Any:
    return json.loads(response.body) if response.body else None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> VcdaApi:
    return VcdaApi(Storage(), clock=clock)


LOCAL = {"type": "localUser", "localUser": "admin", "localPassword": "sandbox-vcda-pass"}


def login(api: VcdaApi, body: dict[str, Any] | None = None) -> core.EmuResponse:
    return api.handle(request("POST", "/sessions", body=body or LOCAL, headers={"Accept": ACCEPT}))


def token(api: VcdaApi) -> str:
    response = login(api)
    assert response.status == 200
    return response.headers["X-VCAV-Auth"]


def call(
    api: VcdaApi,
    method: str,
    path: str,
    auth: str,
    body: Any = None,
    query: dict[str, list[str]] | None = None,
    **extra: str,
) -> core.EmuResponse:
    headers = {"Accept": ACCEPT, "X-VCAV-Auth": auth, **extra}
    return api.handle(request(method, path, body=body, query=query, headers=headers))


def generate(api: VcdaApi, auth: str) -> dict[str, Any]:
    response = call(api, "POST", "/backups", auth, {"password": BACKUP_PASSWORD})
    assert response.status == 202
    return answer(response)


# --- sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        LOCAL,
        {"type": "vcdCredentials", "vcdUser": "admin", "vcdPassword": "sandbox-vcda-pass"},
        {"type": "ssoCredentials", "username": "admin", "password": "sandbox-vcda-pass"},
    ],
)
def test_login_with_each_credential_type(api: VcdaApi, body: dict[str, Any]) -> None:
    response = login(api, body)
    assert response.status == 200
    assert response.headers["X-VCAV-Auth"]
    session = answer(response)
    assert set(session) == {"roles", "user", "authenticatedSites"}
    assert session["user"] == "admin"
    assert "sandbox-vcda-pass" not in response.body.decode()
    assert api.control("stats", {})["logins"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {**LOCAL, "localPassword": "wrong"},
        {**LOCAL, "localUser": "root"},
        {"type": "vcdCredentials", "localUser": "admin", "localPassword": "sandbox-vcda-pass"},
    ],
)
def test_bad_credentials_get_401_api_error(api: VcdaApi, body: dict[str, Any]) -> None:
    response = login(api, body)
    assert response.status == 401
    assert "X-VCAV-Auth" not in response.headers
    error = answer(response)
    assert set(error) == {"args", "code", "msg", "stacktrace"}
    assert error["code"] == "NotAuthenticated"
    assert api.control("stats", {})["failed_logins"] == 1


def test_unknown_login_type_gets_400(api: VcdaApi) -> None:
    response = login(api, {"type": "kerberos"})
    assert response.status == 400
    assert answer(response)["code"] == "InvalidRequest"


def test_calls_need_the_token(api: VcdaApi) -> None:
    response = api.handle(request("GET", "/backups", headers={"Accept": ACCEPT}))
    assert response.status == 401
    assert answer(response) == {
        "args": [],
        "code": "NotAuthenticated",
        "msg": "Authentication required.",
        "stacktrace": "com.vmware.h4.api.error.exceptions.NotAuthenticatedException: "
        "Authentication required.",
    }
    assert call(api, "GET", "/backups", "not-a-token").status == 401


def test_token_expires_when_idle(api: VcdaApi, clock: Clock) -> None:
    auth = token(api)
    clock.advance(1799)
    assert call(api, "GET", "/backups", auth).status == 200  # renews the idle timer
    clock.advance(1799)
    assert call(api, "GET", "/backups", auth).status == 200
    clock.advance(1800)
    assert call(api, "GET", "/backups", auth).status == 401


def test_session_lifetime_is_configurable(api: VcdaApi, clock: Clock) -> None:
    api.control("set_session_lifetime", {"seconds": 5})
    auth = token(api)
    clock.advance(5)
    assert call(api, "GET", "/backups", auth).status == 401


def test_logout_and_expire_sessions(api: VcdaApi) -> None:
    auth = token(api)
    assert answer(call(api, "GET", "/sessions", auth))["user"] == "admin"
    assert call(api, "DELETE", "/sessions", auth).status == 204
    assert call(api, "GET", "/backups", auth).status == 401
    auth = token(api)
    assert api.control("expire_sessions", {}) == {"expired": 1}
    assert call(api, "GET", "/backups", auth).status == 401


@pytest.mark.parametrize(
    "accept", ["application/json", "*/*", "", "application/vnd.vmware.h4-v4.6+json"]
)
def test_other_media_types_get_406(api: VcdaApi, accept: str) -> None:
    headers = {"Accept": accept} if accept else {}
    response = api.handle(request("POST", "/sessions", body=LOCAL, headers=headers))
    assert response.status == 406
    assert answer(response)["code"] == "NotAcceptable"


def test_lenient_accept_variant(api: VcdaApi) -> None:
    api.control("set_variant", {"accept": "lenient"})
    response = api.handle(
        request("POST", "/sessions", body=LOCAL, headers={"Accept": "application/json"})
    )
    assert response.status == 200


def test_operation_ids_are_counted(api: VcdaApi) -> None:
    auth = token(api)
    call(api, "GET", "/backups", auth, operationID="run-1")
    call(api, "GET", "/tasks", auth, operationID="run-1")
    call(api, "GET", "/tasks", auth, operationID="run-2")
    assert api.control("stats", {})["operation_ids"] == {"run-1": 2, "run-2": 1}


# --- backups and tasks ---------------------------------------------------------------------


def test_backup_task_progresses_to_success(api: VcdaApi, clock: Clock) -> None:
    api.control("set_duration", {"seconds": 100})
    auth = token(api)
    task = generate(api, auth)
    assert task["state"] == "QUEUED"
    assert task["progress"] == 0
    assert task["endTime"] == -1
    assert task["startTime"] == 1_700_000_000_000
    assert task["user"] == "admin"
    assert task["result"] is None and task["error"] is None
    clock.advance(40)
    running = answer(call(api, "GET", f"/tasks/{task['id']}", auth))
    assert running["state"] == "RUNNING"
    assert running["progress"] == 40
    assert running["lastUpdated"] == 1_700_000_040_000
    assert answer(call(api, "GET", "/backups", auth)) == []
    clock.advance(60)
    done = answer(call(api, "GET", f"/tasks/{task['id']}", auth))
    assert done["state"] == "SUCCEEDED"
    assert done["progress"] == 100
    assert done["endTime"] == 1_700_000_100_000
    assert done["resultType"] == "BackupInfo"
    result = done["result"]
    assert result["generatedOn"] == 1_700_000_100_000
    assert result["hash"].startswith("SHA-512:")
    assert len(result["hash"].removeprefix("SHA-512:").split(":")) == 64
    assert answer(call(api, "GET", "/backups", auth)) == [result]


def test_fail_next_backup_ends_the_task_failed(api: VcdaApi, clock: Clock) -> None:
    api.control("fail_next_backup", {"message": "Not enough space on /backups"})
    auth = token(api)
    task = generate(api, auth)
    clock.advance(1)
    failed = answer(call(api, "GET", f"/tasks/{task['id']}", auth))
    assert failed["state"] == "FAILED"
    assert failed["result"] is None
    assert failed["error"]["msg"] == "Not enough space on /backups"
    assert failed["error"]["code"] == "GeneralServerFailure"
    assert failed["endTime"] > 0
    assert answer(call(api, "GET", "/backups", auth)) == []


def test_failure_status_word_shows_only_once_failed(api: VcdaApi, clock: Clock) -> None:
    api.control("fail_next_backup", {"status": "CANCELED"})
    auth = token(api)
    task = generate(api, auth)
    assert task["state"] == "QUEUED"
    clock.advance(1)
    assert answer(call(api, "GET", f"/tasks/{task['id']}", auth))["state"] == "CANCELED"


def test_generated_on_string_variant(api: VcdaApi, clock: Clock) -> None:
    api.control("set_variant", {"generated_on": "string"})
    auth = token(api)
    generate(api, auth)
    clock.advance(1)
    assert answer(call(api, "GET", "/backups", auth))[0]["generatedOn"] == "1700000000500L"


def test_result_type_on_success_variant(api: VcdaApi, clock: Clock) -> None:
    api.control("set_variant", {"result_type": "on_success"})
    auth = token(api)
    task = generate(api, auth)
    assert task["resultType"] is None
    clock.advance(1)
    assert answer(call(api, "GET", f"/tasks/{task['id']}", auth))["resultType"] == "BackupInfo"


def test_generate_needs_a_password(api: VcdaApi) -> None:
    auth = token(api)
    for body in ({}, {"password": ""}, {"password": 5}, ["x"]):
        response = call(api, "POST", "/backups", auth, body)
        assert response.status == 400
        assert answer(response)["code"] == "InvalidRequest"


def test_task_listing_pages_and_filters(api: VcdaApi, clock: Clock) -> None:
    auth = token(api)
    api.control("set_duration", {"seconds": 10})
    first = generate(api, auth)
    clock.advance(20)
    second = generate(api, auth)
    clock.advance(5)
    third = generate(api, auth)
    listed = answer(call(api, "GET", "/tasks", auth))
    assert listed["total"] == 3
    assert [t["id"] for t in listed["items"]] == [first["id"], second["id"], third["id"]]
    page = answer(call(api, "GET", "/tasks", auth, query={"offset": ["1"], "limit": ["1"]}))
    assert page == {"items": [listed["items"][1]], "total": 3}
    running = answer(call(api, "GET", "/tasks", auth, query={"state": ["RUNNING"]}))
    assert [t["id"] for t in running["items"]] == [second["id"]]
    queued = answer(call(api, "GET", "/tasks", auth, query={"state": ["QUEUED"]}))
    assert [t["id"] for t in queued["items"]] == [third["id"]]
    bad = call(api, "GET", "/tasks", auth, query={"limit": ["-1"]})
    assert bad.status == 400


def test_unknown_task_is_404(api: VcdaApi) -> None:
    response = call(api, "GET", "/tasks/00000000-0000-0000-0000-000000000000", token(api))
    assert response.status == 404
    assert answer(response)["code"] == "NotFound"


def test_delete_backup(api: VcdaApi, clock: Clock) -> None:
    auth = token(api)
    generate(api, auth)
    clock.advance(1)
    backup_id = answer(call(api, "GET", "/backups", auth))[0]["id"]
    deleted = call(api, "DELETE", f"/backups/{backup_id}", auth)
    assert deleted.status == 204 and deleted.body == b""
    assert answer(call(api, "GET", "/backups", auth)) == []
    assert call(api, "DELETE", f"/backups/{backup_id}", auth).status == 404


def test_delete_status_variant(api: VcdaApi) -> None:
    api.control("set_variant", {"delete_status": 200})
    backup = api.control("seed_backup", {"age_seconds": 10})["backup"]
    assert call(api, "DELETE", f"/backups/{backup['id']}", token(api)).status == 200


def test_a_running_backup_cannot_be_deleted_yet(api: VcdaApi) -> None:
    auth = token(api)
    task = generate(api, auth)
    # The task names no backup until it succeeds: guess the id the emulator will use.
    response = call(api, "DELETE", f"/backups/{task['id']}", auth)
    assert response.status == 404


# --- seeding, faults, secrets ----------------------------------------------------------------


def test_seed_backup_looks_thirty_hours_old(api: VcdaApi, clock: Clock) -> None:
    seeded = api.control("seed_backup", {"age_seconds": 108000})
    backup = seeded["backup"]
    assert backup["generatedOn"] == (1_700_000_000 - 108000) * 1000
    assert seeded["task"]["state"] == "SUCCEEDED"
    assert seeded["task"]["startTime"] == (1_700_000_000 - 108000 - 60) * 1000
    assert answer(call(api, "GET", "/backups", token(api))) == [backup]


def test_seed_failed_and_running_tasks(api: VcdaApi, clock: Clock) -> None:
    failed = api.control("seed_backup", {"status": "FAILED", "message": "disk", "age_seconds": 9})
    running = api.control("seed_backup", {"status": "RUNNING", "age_seconds": 60})
    assert failed["backup"] is None
    assert failed["task"]["error"]["msg"] == "disk"
    clock.advance(86400)
    auth = token(api)
    assert answer(call(api, "GET", f"/tasks/{running['task']['id']}", auth))["state"] == "RUNNING"
    assert answer(call(api, "GET", "/backups", auth)) == []


def test_fail_rule_answers_an_api_error(api: VcdaApi) -> None:
    api.control("fail", {"method": "POST", "path_regex": "^/backups$", "status": 503})
    auth = token(api)
    response = call(api, "POST", "/backups", auth, {"password": BACKUP_PASSWORD})
    assert response.status == 503
    assert answer(response)["code"] == "ServiceUnavailable"
    assert answer(call(api, "GET", "/tasks", auth))["total"] == 0


def test_drop_after_work_still_starts_the_task(api: VcdaApi) -> None:
    api.control("drop_after_work", {"method": "POST", "path_regex": "^/backups$"})
    auth = token(api)
    with pytest.raises(core.DropConnection):
        call(api, "POST", "/backups", auth, {"password": BACKUP_PASSWORD})
    assert answer(call(api, "GET", "/tasks", auth))["total"] == 1


def test_no_answer_stat_or_row_carries_the_backup_password(tmp_path: Any, clock: Clock) -> None:
    storage = Storage(tmp_path / "vcda.db")
    api = VcdaApi(storage, clock=clock)
    auth = token(api)
    seen = [generate(api, auth)]
    for _ in range(3):
        clock.advance(0.3)
        for path in ("/backups", "/tasks", f"/tasks/{seen[0]['id']}"):
            seen.append(answer(call(api, "GET", path, auth)))
    api.control("fail", {"path_regex": "backups"})
    bad = call(api, "POST", "/backups", auth, {"password": BACKUP_PASSWORD})
    seen.append(answer(bad))
    seen.append(answer(call(api, "POST", "/backups", auth, {"password": 7})))
    seen.append(api.control("stats", {}))
    api.close()
    assert BACKUP_PASSWORD not in json.dumps(seen)
    assert BACKUP_PASSWORD.encode() not in (tmp_path / "vcda.db").read_bytes()


def test_reset_clears_tasks_backups_and_operation_ids(api: VcdaApi) -> None:
    api.control("seed_backup", {})
    auth = token(api)
    call(api, "GET", "/backups", auth, operationID="x")
    api.control("reset", {})
    stats = api.control("stats", {})
    assert stats["operation_ids"] == {} and stats["total"] == 0
    assert answer(call(api, "GET", "/backups", token(api))) == []


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("seed_backup", {"age_seconds": "old"}),
        ("seed_backup", {"password": "x"}),
        ("set_variant", {"generated_on": "date"}),
        ("fail_next_backup", {"times": 0}),
    ],
)
def test_bad_control_payloads_are_refused(
    api: VcdaApi, action: str, payload: dict[str, Any]
) -> None:
    with pytest.raises(core.BadRequest):
        api.control(action, payload)


# --- over HTTP -------------------------------------------------------------------------------


def test_over_http() -> None:
    api = VcdaApi(Storage())
    with server.EmulatorServer([api]) as emulator:
        control = f"{emulator.url}/_control/vcda"
        httpx.post(f"{control}/seed_backup", json={"age_seconds": 108000}).raise_for_status()
        headers = {"Accept": ACCEPT, "operationID": "run-42"}
        with httpx.Client(base_url=emulator.url_for("vcda"), headers=headers, timeout=5) as client:
            creds = api.credentials()
            login_response = client.post(
                "/sessions",
                json={
                    "type": "localUser",
                    "localUser": creds["user"],
                    "localPassword": creds["password"],
                },
            )
            assert login_response.status_code == 200
            client.headers["X-VCAV-Auth"] = login_response.headers["X-VCAV-Auth"]
            assert len(client.get("/backups").json()) == 1
            task = client.post("/backups", json={"password": BACKUP_PASSWORD})
            assert task.status_code == 202 and task.json()["state"] == "QUEUED"
            assert client.get(f"/tasks/{task.json()['id']}").status_code == 200
            assert client.delete("/sessions").status_code == 204
        stats = httpx.post(f"{control}/stats", json={}).json()
        assert stats["operation_ids"] == {"run-42": 5}
        assert BACKUP_PASSWORD not in json.dumps(stats)
