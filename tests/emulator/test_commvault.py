"""The emulated Commvault Command Center: login, CreateTask, jobs over time, filters, seeding."""

from __future__ import annotations

import base64
import copy
import email.message
import json
from typing import Any

import httpx
import pytest

from controller.emulator import core, server
from controller.emulator.commvault import CommvaultApi
from controller.emulator.storage import Storage

PASSWORD = "sandbox-commvault-pass"
START = 1_700_000_000


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def request(
    method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
) -> core.EmuRequest:
    message = email.message.Message()
    for name, value in (headers or {}).items():
        message[name] = value
    payload = b"" if body is None else json.dumps(body).encode()
    return core.EmuRequest(method, path, {}, message, payload)


def answer(response: core.EmuResponse) -> Any:
    return json.loads(response.body) if response.body else None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> CommvaultApi:
    emulator = CommvaultApi(Storage(), clock=clock)
    emulator.control(
        "seed_subclient",
        {"subclient_id": 123, "client_name": "aws-prod", "subclient_name": "orders-tables"},
    )
    return emulator


def login_body(password: str = PASSWORD, user: str = "admin") -> dict[str, Any]:
    encoded = base64.b64encode(password.encode()).decode()
    return {"mode": 4, "username": user, "password": encoded, "deviceId": "d", "clientType": 30}


def token(api: CommvaultApi) -> str:
    response = api.handle(request("POST", "/Login", body=login_body()))
    assert response.status == 200
    return answer(response)["token"]


def call(
    api: CommvaultApi, method: str, path: str, auth: str, body: Any = None
) -> core.EmuResponse:
    return api.handle(request(method, path, body=body, headers={"Authtoken": auth}))


TASK: dict[str, Any] = {
    "taskInfo": {
        "associations": [
            {
                "clientName": "aws-prod",
                "instanceName": "DynamoDB",
                "backupsetName": "defaultBackupSet",
                "subclientName": "orders-tables",
                "subclientId": 123,
                "applicationId": 134,
            }
        ],
        "task": {"taskType": 1},
        "subTasks": [
            {
                "subTask": {"subTaskType": 2, "operationType": 2},
                "options": {
                    "backupOpts": {"backupLevel": "INCREMENTAL"},
                    "commonOpts": {"notifyUserOnJobCompletion": False},
                },
            }
        ],
    }
}


def task_with(**association: Any) -> dict[str, Any]:
    body = copy.deepcopy(TASK)
    for key, value in association.items():
        if value is None:
            body["taskInfo"]["associations"][0].pop(key)
        else:
            body["taskInfo"]["associations"][0][key] = value
    return body


def create(api: CommvaultApi, auth: str) -> str:
    response = call(api, "POST", "/CreateTask", auth, TASK)
    body = answer(response)
    assert response.status == 200, body
    assert isinstance(body["taskId"], int)
    return body["jobIds"][0]


def job(api: CommvaultApi, auth: str, job_id: str) -> dict[str, Any]:
    return answer(call(api, "GET", f"/Job/{job_id}", auth))


# --- login ---------------------------------------------------------------------------------


def test_login_answers_a_qsdk_token(api: CommvaultApi) -> None:
    response = api.handle(request("POST", "/Login", body=login_body()))
    body = answer(response)
    assert body["token"].startswith("QSDK ")
    assert body["userName"] == "admin"
    assert "errList" not in body
    assert PASSWORD not in response.body.decode()
    assert api.control("stats", {})["logins"] == 1


@pytest.mark.parametrize(
    "body",
    [
        login_body("wrong"),
        login_body(user="root"),
        {**login_body(), "password": PASSWORD},  # not base64: the plain password is refused
        {"mode": 4},
        ["x"],
    ],
)
def test_bad_login_answers_200_with_err_list(api: CommvaultApi, body: Any) -> None:
    response = api.handle(request("POST", "/Login", body=body))
    assert response.status == 200
    answer_ = answer(response)
    assert "token" not in answer_
    assert answer_["errList"][0]["errorCode"] == 5
    assert answer_["errList"][0]["errLogMessage"]
    assert api.control("stats", {})["failed_logins"] == 1


def test_login_failure_variant_answers_401(api: CommvaultApi) -> None:
    api.control("set_variant", {"login_failure": "401"})
    response = api.handle(request("POST", "/Login", body=login_body("wrong")))
    assert response.status == 401
    assert answer(response)["errList"]


def test_paths_are_case_insensitive(api: CommvaultApi) -> None:
    assert api.handle(request("POST", "/login", body=login_body())).status == 200
    auth = token(api)
    assert call(api, "POST", "/createtask", auth, TASK).status == 200
    assert call(api, "POST", "/JOBS", auth, {}).status == 200


def test_calls_need_a_live_authtoken(api: CommvaultApi, clock: Clock) -> None:
    response = api.handle(request("POST", "/Jobs", body={}))
    assert response.status == 401
    assert answer(response)["errorMessage"]
    assert call(api, "POST", "/Jobs", "QSDK 1234", {}).status == 401
    auth = token(api)
    clock.advance(1799)
    assert call(api, "POST", "/Jobs", auth, {}).status == 200  # use renews the idle timer
    clock.advance(1799)
    assert call(api, "POST", "/Jobs", auth, {}).status == 200
    clock.advance(1800)
    assert call(api, "POST", "/Jobs", auth, {}).status == 401


def test_token_without_prefix_is_accepted(api: CommvaultApi) -> None:
    auth = token(api).removeprefix("QSDK ")
    assert call(api, "POST", "/Jobs", auth, {}).status == 200


def test_logout_and_expire_sessions(api: CommvaultApi) -> None:
    auth = token(api)
    response = call(api, "POST", "/Logout", auth)
    assert response.status == 200 and response.body == b"User logged out"
    assert call(api, "POST", "/Jobs", auth, {}).status == 401
    auth = token(api)
    api.control("expire_sessions", {})
    assert call(api, "POST", "/Jobs", auth, {}).status == 401


def test_api_token_never_idles_out(api: CommvaultApi, clock: Clock) -> None:
    auth = api.control("create_api_token", {})["token"]
    clock.advance(86400 * 30)
    assert call(api, "POST", "/Jobs", auth, {}).status == 200
    api.control("expire_sessions", {})
    assert call(api, "POST", "/Jobs", auth, {}).status == 401


# --- tasks and jobs ------------------------------------------------------------------------


def test_job_is_empty_at_first_then_runs_then_completes(api: CommvaultApi, clock: Clock) -> None:
    api.control("set_duration", {"seconds": 100})
    auth = token(api)
    job_id = create(api, auth)
    assert job(api, auth, job_id) == {"totalRecordsWithoutPaging": 0, "jobs": []}
    clock.advance(50)
    running = job(api, auth, job_id)
    assert running["totalRecordsWithoutPaging"] == 1
    summary = running["jobs"][0]["jobSummary"]
    assert summary["jobId"] == int(job_id)
    assert summary["status"] == "Running"
    assert summary["percentComplete"] == 50
    assert summary["jobStartTime"] == START
    assert summary["jobEndTime"] == 0
    assert summary["lastUpdateTime"] == START + 50
    assert summary["backupLevelName"] == "Incremental"
    assert summary["jobType"] == "Backup"
    assert summary["subclient"]["subclientId"] == 123
    assert summary["subclient"]["clientName"] == "aws-prod"
    clock.advance(50)
    done = job(api, auth, job_id)["jobs"][0]["jobSummary"]
    assert done["status"] == "Completed"
    assert done["percentComplete"] == 100
    assert done["jobEndTime"] == START + 100


def test_empty_polls_are_configurable(api: CommvaultApi) -> None:
    api.control("set_variant", {"empty_job_polls": 3})
    auth = token(api)
    job_id = create(api, auth)
    assert [job(api, auth, job_id)["totalRecordsWithoutPaging"] for _ in range(4)] == [0, 0, 0, 1]
    api.control("set_variant", {"empty_job_polls": 0})
    assert job(api, auth, create(api, auth))["totalRecordsWithoutPaging"] == 1


def test_unknown_job_is_an_empty_list(api: CommvaultApi) -> None:
    auth = token(api)
    assert job(api, auth, "999999") == {"totalRecordsWithoutPaging": 0, "jobs": []}
    assert call(api, "GET", "/Job/abc", auth).status == 400


def test_queued_and_success_status_variants(api: CommvaultApi, clock: Clock) -> None:
    api.control("set_variant", {"queued_status": "Waiting", "success_status": "Committed"})
    api.control("set_variant", {"empty_job_polls": 0})
    api.control("set_duration", {"seconds": 100})
    auth = token(api)
    job_id = create(api, auth)
    assert job(api, auth, job_id)["jobs"][0]["jobSummary"]["status"] == "Waiting"
    clock.advance(100)
    assert job(api, auth, job_id)["jobs"][0]["jobSummary"]["status"] == "Committed"


@pytest.mark.parametrize(("status", "expected"), [(None, "Failed"), ("Killed", "Killed")])
def test_fail_next_backup(
    api: CommvaultApi, clock: Clock, status: str | None, expected: str
) -> None:
    payload = {"message": "throttled by DynamoDB"}
    if status:
        payload["status"] = status
    api.control("fail_next_backup", payload)
    api.control("set_variant", {"empty_job_polls": 0})
    auth = token(api)
    job_id = create(api, auth)
    assert job(api, auth, job_id)["jobs"][0]["jobSummary"]["status"] == "Running"
    clock.advance(1)
    summary = job(api, auth, job_id)["jobs"][0]["jobSummary"]
    assert summary["status"] == expected
    assert summary["pendingReason"] == "throttled by DynamoDB"
    assert summary["jobEndTime"] == START + 0  # 0.5 s after the start, in whole seconds
    assert summary["percentComplete"] < 100


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (task_with(clientName=None), 2, 400),
        (task_with(instanceName=None), 2, 400),
        (task_with(subclientId=None), 2, 400),
        (task_with(subclientId="abc"), 2, 400),
        (task_with(subclientId=999), 4, 404),
        (task_with(clientName="aws-dev"), 4, 404),
        ({"taskInfo": {}}, 2, 400),
        ({}, 2, 400),
    ],
)
def test_create_task_refusals_answer_200_with_error_code(
    api: CommvaultApi, body: dict[str, Any], code: int, status: int
) -> None:
    auth = token(api)
    response = call(api, "POST", "/CreateTask", auth, body)
    assert response.status == 200
    refused = answer(response)
    assert refused["errorCode"] == code and refused["errorMessage"]
    assert "jobIds" not in refused
    api.control("set_variant", {"error_status": "4xx"})
    assert call(api, "POST", "/CreateTask", auth, body).status == status
    assert answer(call(api, "POST", "/Jobs", auth, {}))["totalRecordsWithoutPaging"] == 0


@pytest.mark.parametrize("level", ["FULL", "INCREMENTAL", "DIFFERENTIAL", "SYNTHETIC_FULL"])
def test_each_backup_level(api: CommvaultApi, level: str) -> None:
    body = copy.deepcopy(TASK)
    body["taskInfo"]["subTasks"][0]["options"]["backupOpts"]["backupLevel"] = level
    api.control("set_variant", {"empty_job_polls": 0})
    auth = token(api)
    job_id = answer(call(api, "POST", "/CreateTask", auth, body))["jobIds"][0]
    name = job(api, auth, job_id)["jobs"][0]["jobSummary"]["backupLevelName"]
    assert name.replace(" ", "_").upper() == level


def test_bad_backup_level_and_task_type_are_refused(api: CommvaultApi) -> None:
    auth = token(api)
    body = copy.deepcopy(TASK)
    body["taskInfo"]["subTasks"][0]["options"]["backupOpts"]["backupLevel"] = "HOURLY"
    assert answer(call(api, "POST", "/CreateTask", auth, body))["errorCode"] == 2
    body = copy.deepcopy(TASK)
    body["taskInfo"]["subTasks"][0]["subTask"]["operationType"] = 1001
    assert answer(call(api, "POST", "/CreateTask", auth, body))["errorCode"] == 2


def test_invalid_json_is_a_400(api: CommvaultApi) -> None:
    response = api.handle(
        core.EmuRequest("POST", "/CreateTask", {}, {"Authtoken": token(api)}, b"{oops")
    )
    assert response.status == 400
    assert answer(response)["errorCode"] == 400


def test_auto_create_makes_unknown_subclients(clock: Clock) -> None:
    api = CommvaultApi(Storage(), clock=clock, auto_create=True)
    auth = token(api)
    job_id = create(api, auth)
    api.control("set_variant", {"empty_job_polls": 0})
    subclient = job(api, auth, job_id)["jobs"][0]["jobSummary"]["subclient"]
    assert subclient["subclientName"] == "orders-tables"


# --- listing jobs --------------------------------------------------------------------------


def jobs_filter(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scope": 1,
        "category": 0,
        "pagingConfig": {"sortField": "jobId", "sortDirection": 1, "offset": 0, "limit": 10},
        "jobFilter": {
            "completedJobLookupTime": 30 * 86400,
            "jobTypeList": ["Backup"],
            "entity": {"subclientId": 123},
        },
    }
    for key, value in changes.items():
        if key in ("offset", "limit", "sortDirection", "sortField"):
            body["pagingConfig"][key] = value
        elif key in ("completedJobLookupTime", "jobTypeList"):
            body["jobFilter"][key] = value
        elif key == "subclientId":
            body["jobFilter"]["entity"]["subclientId"] = value
        else:
            body[key] = value
    return body


def listed(api: CommvaultApi, auth: str, **changes: Any) -> tuple[int, list[int]]:
    body = answer(call(api, "POST", "/Jobs", auth, jobs_filter(**changes)))
    return body["totalRecordsWithoutPaging"], [j["jobSummary"]["jobId"] for j in body["jobs"]]


def test_jobs_filter_by_category_subclient_paging_and_lookup(api: CommvaultApi) -> None:
    api.control("seed_subclient", {"subclient_id": 456})
    old = api.control("seed_backup", {"subclient_id": 123, "age_seconds": 40 * 86400})
    day = api.control("seed_backup", {"subclient_id": 123, "age_seconds": 108000})
    other = api.control("seed_backup", {"subclient_id": 456, "age_seconds": 60})
    auth = token(api)
    running = int(create(api, auth))
    old_id, day_id = old["jobSummary"]["jobId"], day["jobSummary"]["jobId"]
    assert listed(api, auth) == (2, [running, day_id])
    assert listed(api, auth, category=1) == (1, [running])
    assert listed(api, auth, category=2) == (1, [day_id])
    assert listed(api, auth, sortDirection=0) == (2, [day_id, running])
    assert listed(api, auth, limit=1, offset=1) == (2, [day_id])
    assert listed(api, auth, completedJobLookupTime=50 * 86400) == (3, [running, day_id, old_id])
    assert listed(api, auth, subclientId=456) == (1, [other["jobSummary"]["jobId"]])
    assert listed(api, auth, jobTypeList=["Restore"]) == (0, [])
    refused = answer(call(api, "POST", "/Jobs", auth, jobs_filter(category=7)))
    assert refused["errorCode"] == 2


def test_jobs_default_lookup_is_one_day(api: CommvaultApi) -> None:
    api.control("seed_backup", {"age_seconds": 108000})
    fresh = api.control("seed_backup", {"age_seconds": 3600})
    body = answer(call(api, "POST", "/Jobs", token(api), {}))
    assert [j["jobSummary"]["jobId"] for j in body["jobs"]] == [fresh["jobSummary"]["jobId"]]


# --- seeding, faults ---------------------------------------------------------------------


def test_seed_backup_looks_thirty_hours_old(api: CommvaultApi) -> None:
    summary = api.control("seed_backup", {"age_seconds": 108000})["jobSummary"]
    assert summary["status"] == "Completed"
    assert summary["jobEndTime"] == START - 108000
    assert summary["jobStartTime"] == START - 108000 - 60
    auth = token(api)
    polled = job(api, auth, str(summary["jobId"]))  # seeded jobs are never answered empty
    assert polled["jobs"][0]["jobSummary"] == summary


@pytest.mark.parametrize(
    ("status", "end_is_zero"),
    [
        ("Failed", False),
        ("Killed", False),
        ("Completed w/ one or more errors", False),
        ("Running", True),
        ("Suspended", True),
    ],
)
def test_seed_backup_statuses(api: CommvaultApi, status: str, end_is_zero: bool) -> None:
    summary = api.control("seed_backup", {"status": status, "age_seconds": 100})["jobSummary"]
    assert summary["status"] == status
    assert (summary["jobEndTime"] == 0) is end_is_zero


def test_seed_backup_needs_a_known_or_single_subclient(api: CommvaultApi) -> None:
    api.control("seed_subclient", {"subclient_id": 456})
    with pytest.raises(core.BadRequest):
        api.control("seed_backup", {})
    made = api.control("seed_backup", {"subclient_id": 789, "backup_level": "FULL"})
    assert made["jobSummary"]["subclient"]["subclientId"] == 789
    assert made["jobSummary"]["backupLevelName"] == "Full"


def test_drop_after_work_still_creates_the_job(api: CommvaultApi) -> None:
    api.control("drop_after_work", {"method": "POST", "path_regex": "(?i)/createtask"})
    auth = token(api)
    with pytest.raises(core.DropConnection):
        call(api, "POST", "/CreateTask", auth, TASK)
    assert listed(api, auth)[0] == 1


def test_fail_rule_answers_the_commvault_error_shape(api: CommvaultApi) -> None:
    api.control("fail", {"method": "POST", "path_regex": "CreateTask", "status": 500})
    response = call(api, "POST", "/CreateTask", token(api), TASK)
    assert response.status == 500
    assert answer(response) == {"errorCode": 500, "errorMessage": "injected failure"}


def test_reset(api: CommvaultApi) -> None:
    api.control("seed_backup", {})
    api.control("reset", {})
    with pytest.raises(core.BadRequest):
        api.control("seed_backup", {})  # the subclient went too
    assert api.control("stats", {})["total"] == 0


# --- over HTTP -----------------------------------------------------------------------------


def test_over_http() -> None:
    api = CommvaultApi(Storage())
    with server.EmulatorServer([api]) as emulator:
        control = f"{emulator.url}/_control/commvault"
        httpx.post(f"{control}/seed_subclient", json={"subclient_id": 123}).raise_for_status()
        httpx.post(f"{control}/seed_backup", json={"age_seconds": 108000}).raise_for_status()
        base = emulator.url_for("commvault")
        assert base.endswith("/commvault/commandcenter/api")
        with httpx.Client(base_url=base, timeout=5) as client:
            creds = api.credentials()
            login = client.post("/Login", json=login_body(creds["password"], creds["username"]))
            client.headers["Authtoken"] = login.json()["token"]
            body = task_with(clientName="cloud-account", subclientName=None)
            created = client.post("/CreateTask", json=body)
            assert created.status_code == 200 and created.json()["jobIds"]
            jobs = client.post("/Jobs", json=jobs_filter()).json()
            assert jobs["totalRecordsWithoutPaging"] == 2
            assert client.post("/logout").status_code == 200
