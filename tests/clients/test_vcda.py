"""The vcda backup client against a fake appliance API on httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from controller.clients import backups, vcda
from controller.clients.backups import BackupState
from controller.clients.http import HttpSettings
from controller.errors import AuthError, PermanentApiError, TransientApiError
from controller.manifests import Api, BackupPolicy, SourceLocation, VcdaApplianceSource

USER_PASSWORD = "vcda-admin-pass-123"
BACKUP_PASSWORD = "backup-file-pass-456"
AUTH = {"type": "localUser", "user": "admin", "password": USER_PASSWORD}
POLICY = BackupPolicy(
    name="appliance",
    connection="vcda-main",
    source=VcdaApplianceSource(password=BACKUP_PASSWORD),
    max_age=26 * 3600,
    source_location=SourceLocation("backups.yaml", 1),
)
MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


class FakeVcda:
    def __init__(self) -> None:
        self.backups: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.sessions = 0
        self.token = ""
        self.logouts = 0
        self.calls: list[tuple[str, str]] = []
        self.login_bodies: list[dict[str, Any]] = []
        self.seen_headers: list[httpx.Headers] = []
        self.next_answers: list[tuple[str, str, int, Any]] = []  # method, path, status, body
        self.drop_after_work = 0
        self.refuse_login = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.calls.append((method, path))
        self.seen_headers.append(request.headers)
        if path == "/sessions" and method == "POST":
            self.login_bodies.append(json.loads(request.content))
            if self.refuse_login:
                return httpx.Response(
                    401, json={"code": "NotAuthenticated", "msg": f"bad password {USER_PASSWORD}"}
                )
            self.sessions += 1
            self.token = f"tok-{self.sessions}"
            return httpx.Response(
                200, headers={"X-VCAV-Auth": self.token}, json={"user": "admin", "roles": []}
            )
        if request.headers.get("X-VCAV-Auth") != self.token:
            return httpx.Response(401, json={"code": "NotAuthenticated", "msg": "expired"})
        if path == "/sessions" and method == "DELETE":
            self.logouts += 1
            return httpx.Response(204)
        if self.next_answers and self.next_answers[0][:2] == (method, path):
            status, body = self.next_answers.pop(0)[2:]
            return httpx.Response(status, json=body)
        if path == "/backups" and method == "POST":
            task_id = f"t{len(self.tasks) + 1}"
            self.tasks[task_id] = {
                "id": task_id, "state": "QUEUED", "progress": 0, "startTime": MS,
                "endTime": -1, "resultType": "BackupInfo", "user": "admin",
            }  # fmt: skip
            if self.drop_after_work:
                self.drop_after_work -= 1
                raise httpx.ReadTimeout("lost", request=request)
            return httpx.Response(202, json=self.tasks[task_id])
        if path == "/backups" and method == "GET":
            return httpx.Response(200, json=self.backups)
        if path == "/tasks" and method == "GET":
            wanted = request.url.params["state"]
            items = [t for t in self.tasks.values() if t["state"] == wanted]
            return httpx.Response(200, json={"items": items, "total": len(items)})
        if path.startswith("/tasks/"):
            task = self.tasks.get(path.rsplit("/", 1)[1])
            if task is None:
                return httpx.Response(404, json={"code": "EntityNotFound", "msg": "no task"})
            return httpx.Response(200, json=task)
        if path.startswith("/backups/") and method == "DELETE":
            backup_id = path.rsplit("/", 1)[1]
            self.backups = [b for b in self.backups if b["id"] != backup_id]
            return httpx.Response(204)
        return httpx.Response(404, json={"code": "NotFound", "msg": path})

    def finish(self, task_id: str, *, ok: bool = True) -> None:
        task = self.tasks[task_id]
        task.update(state="SUCCEEDED" if ok else "FAILED", progress=100, endTime=MS + 5000)
        if ok:
            result = {"id": f"b-{task_id}", "generatedOn": MS + 4000, "hash": "SHA-512:AB"}
            task["result"] = result
            self.backups.append(result)
        else:
            task["error"] = {"code": "GeneralServerFailure", "msg": "disk full", "args": []}


@pytest.fixture
def fake() -> FakeVcda:
    return FakeVcda()


@pytest.fixture
def client(fake: FakeVcda) -> Iterator[Callable[..., backups.BackupApi]]:
    made: list[backups.BackupApi] = []

    def build(auth: dict[str, str] = AUTH) -> backups.BackupApi:
        settings = HttpSettings(
            base_url="https://vcda.test", connection="vcda-main", backoff_base=0
        )
        api = backups.open_backup_api(
            Api.VCDA,
            settings,
            auth,
            operation_id="run-42",
            transport=httpx.MockTransport(fake),
            sleep=lambda _: None,
        )
        made.append(api)
        return api

    yield build
    for api in made:
        api.close()


def test_login_token_from_header_and_headers_sent(fake: FakeVcda, client) -> None:
    client().list_backups(POLICY)
    assert fake.login_bodies == [
        {"type": "localUser", "localUser": "admin", "localPassword": USER_PASSWORD}
    ]
    last = fake.seen_headers[-1]
    assert last["X-VCAV-Auth"] == "tok-1"
    assert last["Accept"] == "application/vnd.vmware.h4-v4.7+json;charset=UTF-8"
    assert last["operationID"] == "run-42"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("vcdCredentials", {"type": "vcdCredentials", "vcdUser": "u", "vcdPassword": "p-secret"}),
        ("ssoCredentials", {"type": "ssoCredentials", "username": "u", "password": "p-secret"}),
    ],
)
def test_other_login_types(fake: FakeVcda, client, kind: str, expected: dict) -> None:
    client({"type": kind, "user": "u", "password": "p-secret"}).list_backups(POLICY)
    assert fake.login_bodies == [expected]


def test_close_logs_out(fake: FakeVcda, client) -> None:
    api = client()
    api.list_backups(POLICY)
    api.close()
    assert fake.logouts == 1


def test_trigger_poll_to_success(fake: FakeVcda, client) -> None:
    api = client()
    handle = api.trigger(POLICY)
    assert handle == "t1"
    queued = api.poll(POLICY, handle)
    assert queued.state is BackupState.RUNNING and queued.progress == 0
    fake.finish("t1")
    done = api.poll(POLICY, handle)
    assert done.state is BackupState.SUCCEEDED and done.id == "b-t1"
    assert done.created == datetime.fromtimestamp((MS + 4000) / 1000, UTC)


def test_failed_task_carries_the_servers_message(fake: FakeVcda, client) -> None:
    api = client()
    handle = api.trigger(POLICY)
    fake.finish(handle, ok=False)
    failed = api.poll(POLICY, handle)
    assert failed.state is BackupState.FAILED and failed.message == "disk full"


def test_unknown_final_state_is_a_failure() -> None:
    task = {"id": "t", "state": "CANCELED", "endTime": MS}
    assert vcda.task_to_backup(task).state is BackupState.FAILED
    unknown_open = {"id": "t", "state": "PAUSED", "endTime": -1}
    assert vcda.task_to_backup(unknown_open).state is BackupState.RUNNING


def test_list_backups_and_running_tasks(fake: FakeVcda, client) -> None:
    fake.backups = [
        {"id": "n", "generatedOn": MS, "hash": "x"},
        {"id": "s", "generatedOn": f"{MS}L", "hash": "y"},
    ]
    fake.tasks["t9"] = {"id": "t9", "state": "RUNNING", "progress": 40, "startTime": MS,
                        "endTime": -1, "resultType": "BackupInfo"}  # fmt: skip
    fake.tasks["r1"] = {"id": "r1", "state": "RUNNING", "startTime": MS, "endTime": -1,
                        "resultType": "ReplicationInfo"}  # fmt: skip
    found = {b.id: b for b in client().list_backups(POLICY)}
    assert set(found) == {"n", "s", "t9"}  # not the replication task
    assert found["n"].created == found["s"].created == datetime.fromtimestamp(MS / 1000, UTC)
    assert found["t9"].state is BackupState.RUNNING and found["t9"].progress == 40


def test_lost_trigger_answer_adopts_the_running_task(fake: FakeVcda, client) -> None:
    fake.drop_after_work = 1
    handle = client().trigger(POLICY)
    assert handle == "t1"
    assert fake.calls.count(("POST", "/backups")) == 1


def test_lost_trigger_answer_after_the_task_ended_points_at_the_backup(
    fake: FakeVcda, client
) -> None:
    fake.backups = [{"id": "old", "generatedOn": MS}]
    fake.drop_after_work = 1
    original = fake.__call__

    def finish_at_once(request: httpx.Request) -> httpx.Response:
        try:
            return original(request)
        finally:
            if "t1" in fake.tasks and fake.tasks["t1"]["state"] == "QUEUED":
                fake.finish("t1")

    api = backups.open_backup_api(
        Api.VCDA,
        HttpSettings(base_url="https://vcda.test", connection="vcda-main", backoff_base=0),
        AUTH,
        transport=httpx.MockTransport(finish_at_once),
        sleep=lambda _: None,
    )
    try:
        handle = api.trigger(POLICY)
        assert handle == "backup:b-t1"
        done = api.poll(POLICY, handle)
        assert done.state is BackupState.SUCCEEDED and done.id == "b-t1"
    finally:
        api.close()
    assert fake.calls.count(("POST", "/backups")) == 1


def test_expired_session_logs_in_again_once(fake: FakeVcda, client) -> None:
    api = client()
    api.list_backups(POLICY)
    fake.token = "server-forgot"
    api.list_backups(POLICY)
    assert fake.sessions == 2


def test_refused_login_never_shows_a_password(fake: FakeVcda, client) -> None:
    fake.refuse_login = True
    with pytest.raises(AuthError) as caught:
        client().list_backups(POLICY)
    text = str(caught.value)
    assert "vcda-main: POST /sessions: HTTP 401: NotAuthenticated: bad password" in text
    assert USER_PASSWORD not in text


def test_backup_password_never_in_errors(fake: FakeVcda, client) -> None:
    fake.next_answers = [
        (
            "POST",
            "/backups",
            400,
            {
                "code": "BadRequest",
                "msg": f"weak password '{BACKUP_PASSWORD}'",
                "stacktrace": "...",
            },
        )
    ]
    with pytest.raises(PermanentApiError) as caught:
        client().trigger(POLICY)
    text = str(caught.value)
    assert "vcda-main: POST /backups: HTTP 400: BadRequest: weak password" in text
    assert BACKUP_PASSWORD not in text and "stacktrace" not in text


def test_backup_password_never_in_lost_answer_errors(fake: FakeVcda, client) -> None:
    fake.next_answers = [("POST", "/backups", 503, {"code": "Busy", "msg": BACKUP_PASSWORD})] * 20
    with pytest.raises(TransientApiError) as caught:
        client().trigger(POLICY)
    assert BACKUP_PASSWORD not in str(caught.value)


def test_delete(fake: FakeVcda, client) -> None:
    fake.backups = [{"id": "x", "generatedOn": MS}]
    client().delete(POLICY, "x")
    assert fake.backups == []


@pytest.mark.parametrize(
    ("task", "counts"),
    [
        ({"resultType": "BackupInfo"}, True),
        ({"resultType": "ReplicationInfo"}, False),
        ({"resultType": None, "workflowInfo": {"type": "ApplianceBackup"}}, True),
        ({"resultType": None, "workflowInfo": {"type": "failover"}}, False),
        ({"resultType": None, "workflowInfo": {}}, True),  # untyped: assume it may be ours
    ],
)
def test_which_tasks_count_as_backups(task: dict[str, Any], counts: bool) -> None:
    assert vcda.is_backup_task(task) is counts


def test_queued_task_counts_as_running(fake: FakeVcda, client) -> None:
    api = client()
    handle = api.trigger(POLICY)  # the fake leaves it QUEUED
    assert [b.id for b in api.list_backups(POLICY)] == [handle]
