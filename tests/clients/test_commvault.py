"""The commvault backup client against a fake Command Center API on httpx.MockTransport."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from controller.clients import backups, commvault
from controller.clients.backups import BackupState
from controller.clients.http import HttpSettings
from controller.errors import AuthError, PermanentApiError
from controller.manifests import Api, BackupPolicy, CommvaultDynamoDBSource, SourceLocation

PASSWORD = "commvault-pass-789"
ENCODED = base64.b64encode(PASSWORD.encode()).decode()
AUTH = {"username": "admin", "password": PASSWORD}
SOURCE = CommvaultDynamoDBSource(
    client_name="aws-prod",
    instance_name="DynamoDB",
    subclient_id=123,
    subclient_name="orders-tables",
    backup_level="FULL",
)
POLICY = BackupPolicy(
    name="orders",
    connection="cv-main",
    source=SOURCE,
    max_age=26 * 3600,
    source_location=SourceLocation("backups.yaml", 1),
)
T0 = 1_700_000_000  # epoch seconds


def summary(job_id: int, status: str, start: int = T0, end: int = 0, **extra: Any) -> dict:
    job = {
        "jobId": job_id,
        "status": status,
        "percentComplete": 100 if end else 30,
        "jobStartTime": start,
        "jobEndTime": end,
        "jobType": "Backup",
        "subclient": {"clientName": "aws-prod", "subclientId": 123, "subclientName": "orders"},
    }
    job.update(extra)
    return {"jobSummary": job}


class FakeCommvault:
    def __init__(self) -> None:
        self.jobs: dict[int, dict[str, Any]] = {}
        self.logins = 0
        self.logouts = 0
        self.token = ""
        self.calls: list[tuple[str, str]] = []
        self.bodies: dict[str, list[Any]] = {}
        self.login_answer: dict[str, Any] | None = None
        self.task_answer: tuple[int, Any] | None = None
        self.hidden_polls = 0  # first GET /Job answers that do not list the job yet
        self.drop_after_work = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path.removeprefix("/commandcenter/api"), request.method
        self.calls.append((method, path))
        if request.content:
            self.bodies.setdefault(path, []).append(json.loads(request.content))
        if path == "/Login":
            if self.login_answer is not None:
                return httpx.Response(200, json=self.login_answer)
            self.logins += 1
            self.token = f"QSDK tok{self.logins}"
            return httpx.Response(200, json={"token": self.token, "userName": "admin"})
        if request.headers.get("Authtoken") != self.token:
            return httpx.Response(401, json={"errorCode": 401, "errorMessage": "token expired"})
        if path == "/Logout":
            self.logouts += 1
            return httpx.Response(200, json={})
        if path == "/CreateTask":
            if self.task_answer is not None:
                return httpx.Response(self.task_answer[0], json=self.task_answer[1])
            job_id = 1000 + len(self.jobs)
            self.jobs[job_id] = summary(job_id, "Running", start=T0 + 100)
            if self.drop_after_work:
                self.drop_after_work -= 1
                raise httpx.RemoteProtocolError("closed", request=request)
            return httpx.Response(200, json={"taskId": 7, "jobIds": [str(job_id)]})
        if path.startswith("/Job/"):
            job_id = int(path.rsplit("/", 1)[1])
            if self.hidden_polls:
                self.hidden_polls -= 1
                return httpx.Response(200, json={"totalRecordsWithoutPaging": 0})
            jobs = [self.jobs[job_id]] if job_id in self.jobs else []
            return httpx.Response(200, json={"totalRecordsWithoutPaging": len(jobs), "jobs": jobs})
        if path == "/Jobs":
            listed = sorted(self.jobs.values(), key=lambda j: -j["jobSummary"]["jobId"])
            return httpx.Response(
                200, json={"totalRecordsWithoutPaging": len(listed), "jobs": listed}
            )
        return httpx.Response(404, json={"errorCode": 404, "errorMessage": f"no {path}"})


@pytest.fixture
def fake() -> FakeCommvault:
    return FakeCommvault()


@pytest.fixture
def client(fake: FakeCommvault) -> Iterator[Callable[..., backups.BackupApi]]:
    made: list[backups.BackupApi] = []

    def build(auth: dict[str, str] = AUTH) -> backups.BackupApi:
        settings = HttpSettings(
            base_url="https://cv.test/commandcenter/api", connection="cv-main", backoff_base=0
        )
        api = backups.open_backup_api(
            Api.COMMVAULT, settings, auth, transport=httpx.MockTransport(fake), sleep=lambda _: 0
        )
        made.append(api)
        return api

    yield build
    for api in made:
        api.close()


def test_login_body_and_token_header(fake: FakeCommvault, client) -> None:
    api = client()
    api.list_backups(POLICY)
    login = fake.bodies["/Login"][0]
    assert login["mode"] == 4 and login["clientType"] == 30 and login["username"] == "admin"
    assert login["password"] == ENCODED and login["deviceId"]
    api.close()
    assert fake.logouts == 1


def test_login_answered_200_with_errlist_is_refused(fake: FakeCommvault, client) -> None:
    fake.login_answer = {"errList": [{"errorCode": 5, "errLogMessage": f"Invalid {PASSWORD}"}]}
    with pytest.raises(AuthError) as caught:
        client().list_backups(POLICY)
    text = str(caught.value)
    assert text.startswith("cv-main: POST /Login: HTTP 200: login refused: Invalid ***")
    assert PASSWORD not in text and ENCODED not in text


def test_ready_token_is_used_directly_and_never_logged_out(fake: FakeCommvault, client) -> None:
    fake.token = "QSDK ready-made"
    api = client({"token": "QSDK ready-made"})
    api.list_backups(POLICY)
    api.close()
    assert fake.logins == 0 and fake.logouts == 0


def test_expired_ready_token_fails_after_one_repeat(fake: FakeCommvault, client) -> None:
    fake.token = "QSDK something-else"
    with pytest.raises(AuthError) as caught:
        client({"token": "QSDK stale-token"}).list_backups(POLICY)
    assert "stale-token" not in str(caught.value)
    assert fake.calls.count(("POST", "/Jobs")) == 2


def test_expired_session_logs_in_again_once(fake: FakeCommvault, client) -> None:
    api = client()
    api.list_backups(POLICY)
    fake.token = "QSDK rotated"
    api.list_backups(POLICY)
    assert fake.logins == 2


def test_trigger_sends_the_documented_body(fake: FakeCommvault, client) -> None:
    handle = client().trigger(POLICY)
    assert handle == "1000"
    task = fake.bodies["/CreateTask"][0]["taskInfo"]
    assert task["associations"] == [
        {"clientName": "aws-prod", "instanceName": "DynamoDB", "backupsetName": "defaultBackupSet",
         "subclientName": "orders-tables", "subclientId": 123, "applicationId": 134}
    ]  # fmt: skip
    assert task["task"] == {"taskType": 1}
    sub = task["subTasks"][0]
    assert sub["subTask"] == {"subTaskType": 2, "operationType": 2}
    assert sub["options"]["backupOpts"] == {"backupLevel": "FULL"}


def test_create_task_error_code_with_200_is_a_failure(fake: FakeCommvault, client) -> None:
    fake.task_answer = (200, {"errorCode": 2, "errorMessage": "Subclient not found"})
    with pytest.raises(PermanentApiError) as caught:
        client().trigger(POLICY)
    assert str(caught.value) == (
        "cv-main: POST /CreateTask: HTTP 200: Subclient not found (errorCode 2)"
    )


def test_create_task_error_with_http_status(fake: FakeCommvault, client) -> None:
    fake.task_answer = (400, {"errorCode": 9, "errorMessage": "bad level"})
    with pytest.raises(PermanentApiError, match=r"POST /CreateTask: HTTP 400: bad level"):
        client().trigger(POLICY)


def test_poll_empty_first_answer_is_running(fake: FakeCommvault, client) -> None:
    api = client()
    handle = api.trigger(POLICY)
    fake.hidden_polls = 1
    first = api.poll(POLICY, handle)
    assert first.state is BackupState.RUNNING and first.id == handle
    assert api.poll(POLICY, handle).progress == 30
    fake.jobs[1000] = summary(1000, "Completed", start=T0 + 100, end=T0 + 500)
    done = api.poll(POLICY, handle)
    assert done.state is BackupState.SUCCEEDED
    assert done.created == datetime.fromtimestamp(T0 + 100, UTC)
    assert done.finished == datetime.fromtimestamp(T0 + 500, UTC)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("Running", BackupState.RUNNING),
        ("Waiting", BackupState.RUNNING),
        ("Pending", BackupState.RUNNING),
        ("Suspended", BackupState.RUNNING),
        ("Completed", BackupState.SUCCEEDED),
        ("Completed w/ one or more errors", BackupState.SUCCEEDED),
        ("Completed w/ one or more warnings", BackupState.SUCCEEDED),
        ("Committed", BackupState.SUCCEEDED),
        ("Failed", BackupState.FAILED),
        ("Killed", BackupState.FAILED),
        ("Failed to Start", BackupState.FAILED),
        ("FAILED", BackupState.FAILED),
    ],
)
def test_job_status_rules(status: str, state: BackupState) -> None:
    job = summary(1, status, end=T0 + 9)["jobSummary"]
    backup = commvault.job_to_backup(job)
    assert backup.state is state
    if state is BackupState.RUNNING:
        assert backup.finished is None


def test_failed_job_message() -> None:
    job = summary(1, "Failed", end=T0, pendingReason="Snapshot quota exceeded")["jobSummary"]
    assert commvault.job_to_backup(job).message == "job Failed: Snapshot quota exceeded"


def test_list_asks_for_the_subclients_jobs_newest_first(fake: FakeCommvault, client) -> None:
    fake.jobs = {
        1: summary(1, "Completed", end=T0 + 60),
        2: summary(2, "Running", start=0),
        3: summary(3, "Completed", subclient={"subclientId": 999}),
    }
    found = {b.id: b for b in client().list_backups(POLICY)}
    assert set(found) == {"1", "2"}  # a job of another subclient is not ours
    assert found["2"].created is None  # 0 means "not yet"
    query = fake.bodies["/Jobs"][0]
    assert query["category"] == 0 and query["scope"] == 1
    assert query["pagingConfig"]["sortDirection"] == 1 and query["pagingConfig"]["limit"] > 0
    assert query["jobFilter"]["entity"] == {"subclientId": 123}
    assert query["jobFilter"]["jobTypeList"] == ["Backup"]
    assert query["jobFilter"]["completedJobLookupTime"] >= 30 * 86400


def test_lost_trigger_answer_adopts_the_active_job(fake: FakeCommvault, client) -> None:
    fake.jobs = {5: summary(5, "Completed", end=T0 + 60)}
    fake.drop_after_work = 1
    assert client().trigger(POLICY) == "1001"
    assert fake.calls.count(("POST", "/CreateTask")) == 1


def test_delete_is_refused_clearly(client) -> None:
    with pytest.raises(PermanentApiError, match="cv-main: deleting backup job 5 is not supported"):
        client().delete(POLICY, "5")
