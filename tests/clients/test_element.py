"""The element backup client against a fake Console API on httpx.MockTransport."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from controller.clients import backups, element
from controller.clients.backups import BackupState
from controller.clients.http import HttpSettings
from controller.errors import AuthError, PermanentApiError, TransientApiError
from controller.manifests import Api, BackupPolicy, ElementApplicationSource, SourceLocation

APP = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
DUMPS = f"/console/api/v2/applications/{APP}/dumps"
SECRET = "element-client-secret-xyz"
AUTH = {"clientId": "converge", "clientSecret": SECRET}
BASIC = base64.b64encode(f"converge:{SECRET}".encode()).decode()


def dump(
    id: str, status: str = "Ready", created: str = "12.04.2022 16:52:41", **flags: Any
) -> dict:
    entity = {
        "id": id,
        "status": status,
        "date-created": created,
        "include-users": True,
        "include-binary-data": True,
        "include-collaboration-registration-data": False,
        "description": "nightly",
    }
    entity.update({k.replace("_", "-"): v for k, v in flags.items()})
    return entity


class FakeElement:
    """Just enough of the console: tokens, dumps, and hooks to misbehave."""

    def __init__(self) -> None:
        self.dumps: list[dict[str, Any]] = []
        self.tokens = 0
        self.valid_token = ""
        self.calls: list[tuple[str, str]] = []
        self.create_as_object = False
        self.next_status: list[tuple[int, Any]] = []  # answers for the next API calls
        self.drop_create_after_work = 0  # lose the answer of this many creates (work done)
        self.drop_create_before_work = 0  # lose it without doing the work
        self.token_answer: tuple[int, Any] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append((request.method, path))
        if path == "/console/sys/token":
            assert request.headers["Authorization"] == f"Basic {BASIC}"
            assert request.content == b"grant_type=client_credentials"
            if self.token_answer:
                return httpx.Response(self.token_answer[0], json=self.token_answer[1])
            self.tokens += 1
            self.valid_token = f"jwt-{self.tokens}"
            return httpx.Response(
                200,
                json={
                    "id_token": self.valid_token,
                    "token_type": "Bearer",
                    "access_token": "Not implemented",
                },
            )
        if request.headers.get("Authorization") != f"Bearer {self.valid_token}":
            return httpx.Response(
                401, json={"code": 16, "status": "UNAUTHENTICATED", "message": "expired"}
            )
        if self.next_status:
            status, body = self.next_status.pop(0)
            return httpx.Response(status, json=body)
        if path == DUMPS and request.method == "GET":
            return httpx.Response(200, json=self.dumps)
        if path == DUMPS and request.method == "POST":
            if self.drop_create_before_work:
                self.drop_create_before_work -= 1
                raise httpx.ReadTimeout("lost", request=request)
            payload = json.loads(request.content)
            new = dump(
                f"d{len(self.dumps) + 1}", status="Creating", created="2024-06-10T12:00:00.000Z"
            )
            new.update({k: v for k, v in payload.items()})
            self.dumps.append(new)
            if self.drop_create_after_work:
                self.drop_create_after_work -= 1
                raise httpx.RemoteProtocolError("closed", request=request)
            return httpx.Response(201, json=new if self.create_as_object else [new])
        if path.startswith(DUMPS + "/"):
            wanted = path.rsplit("/", 1)[1]
            found = [d for d in self.dumps if d["id"] == wanted]
            if request.method == "DELETE":
                if not found:
                    return httpx.Response(
                        404, json={"code": 5, "status": "NOT_FOUND", "message": "no dump"}
                    )
                self.dumps.remove(found[0])
                return httpx.Response(204)
            if found:
                return httpx.Response(200, json=found[0])
            return httpx.Response(
                404, json={"code": 5, "status": "NOT_FOUND", "message": "no dump"}
            )
        return httpx.Response(404, json={"code": 5, "message": f"no route {path}"})

    def count(self, method: str, path: str) -> int:
        return sum(1 for call in self.calls if call == (method, path))


def make_policy(**source: Any) -> BackupPolicy:
    return BackupPolicy(
        name="crm-nightly",
        connection="element-main",
        source=ElementApplicationSource(application_id=APP, description="nightly", **source),
        max_age=26 * 3600,
        source_location=SourceLocation("backups.yaml", 1),
    )


@pytest.fixture
def fake() -> FakeElement:
    return FakeElement()


@pytest.fixture
def client(fake: FakeElement) -> Callable[[], backups.BackupApi]:
    settings = HttpSettings(
        base_url="https://element.test", connection="element-main", backoff_base=0.0
    )
    made: list[backups.BackupApi] = []

    def build() -> backups.BackupApi:
        api = backups.open_backup_api(
            Api.ELEMENT, settings, AUTH, transport=httpx.MockTransport(fake), sleep=lambda _: None
        )
        made.append(api)
        return api

    yield build
    for api in made:
        api.close()


def test_list_parses_both_date_forms_and_states(fake: FakeElement, client) -> None:
    fake.dumps = [
        dump("a", "Ready", "12.04.2022 16:52:41"),
        dump("b", "Ready", "2024-01-17T14:27:04.383Z"),
        dump("c", "Error"),
        dump("d", "Creating"),
        dump("e", "UploadFailed"),
    ]
    found = {b.id: b for b in client().list_backups(make_policy())}
    assert found["a"].created == datetime(2022, 4, 12, 16, 52, 41, tzinfo=UTC)
    assert found["b"].created == datetime(2024, 1, 17, 14, 27, 4, 383000, tzinfo=UTC)
    assert [found[i].state for i in "abcde"] == [
        BackupState.SUCCEEDED,
        BackupState.SUCCEEDED,
        BackupState.FAILED,
        BackupState.RUNNING,
        BackupState.FAILED,
    ]
    assert "Error" in found["c"].message


def test_list_keeps_only_dumps_with_the_policys_flags(fake: FakeElement, client) -> None:
    fake.dumps = [
        dump("same"),
        dump("no-users", include_users=False),
        dump("with-collab", include_collaboration_registration_data=True),
    ]
    assert [b.id for b in client().list_backups(make_policy())] == ["same"]
    wanted = make_policy(include_users=False)
    assert [b.id for b in client().list_backups(wanted)] == ["no-users"]


@pytest.mark.parametrize("as_object", [False, True], ids=["array", "object"])
def test_trigger_accepts_array_or_object_and_poll_follows(
    fake: FakeElement, client, as_object: bool
) -> None:
    fake.create_as_object = as_object
    api = client()
    handle = api.trigger(make_policy())
    assert handle == "d1"
    assert api.poll(make_policy(), handle).state is BackupState.RUNNING
    fake.dumps[0]["status"] = "Ready"
    done = api.poll(make_policy(), handle)
    assert done.state is BackupState.SUCCEEDED and done.id == "d1"
    sent = fake.dumps[0]
    assert sent["include-users"] is True and sent["description"] == "nightly"
    assert fake.tokens == 1  # one login for the whole session


def test_lost_create_answer_adopts_the_new_dump(fake: FakeElement, client) -> None:
    fake.dumps = [dump("old")]
    fake.drop_create_after_work = 1
    handle = client().trigger(make_policy())
    assert handle == "d2"
    assert fake.count("POST", DUMPS) == 1  # never a second dump


def test_lost_create_without_work_creates_again(fake: FakeElement, client) -> None:
    fake.drop_create_before_work = 1
    handle = client().trigger(make_policy())
    assert handle == "d1"
    assert fake.count("POST", DUMPS) == 2
    assert len(fake.dumps) == 1


def test_lost_answers_every_time_give_up_after_bounded_attempts(fake: FakeElement, client) -> None:
    fake.drop_create_before_work = 10
    with pytest.raises(TransientApiError) as caught:
        client().trigger(make_policy())
    assert caught.value.maybe_applied
    assert fake.count("POST", DUMPS) == 3


def test_wrapped_error_with_details_array(fake: FakeElement, client) -> None:
    fake.next_status = [
        (400, {"error": {"code": 3, "status": "INVALID_ARGUMENT", "message": "bad request",
                         "details": ["1111 is not a valid UUID."]}}),
    ]  # fmt: skip
    with pytest.raises(PermanentApiError) as caught:
        client().list_backups(make_policy())
    text = str(caught.value)
    assert text.startswith(f"element-main: GET {DUMPS}: HTTP 400: ")
    assert "INVALID_ARGUMENT: bad request (1111 is not a valid UUID.)" in text


def test_bare_error_with_details_string(fake: FakeElement, client) -> None:
    fake.next_status = [
        (403, {"code": 7, "status": "PERMISSION_DENIED", "message": "denied", "details": "no role"})
    ]
    with pytest.raises(PermanentApiError, match=r"PERMISSION_DENIED: denied \(no role\)"):
        client().trigger(make_policy())


def test_expired_token_logs_in_again_once(fake: FakeElement, client) -> None:
    api = client()
    api.list_backups(make_policy())
    fake.valid_token = "rotated"  # the server forgot our token: 401 next time
    assert api.list_backups(make_policy()) == []
    assert fake.tokens == 2


def test_400_invalid_request_also_logs_in_again(fake: FakeElement, client) -> None:
    api = client()
    api.list_backups(make_policy())
    fake.next_status = [(400, {"error_code": "invalid_request", "error_description": "bad jwt"})]
    api.list_backups(make_policy())
    assert fake.tokens == 2


def test_second_expiry_in_a_row_is_an_auth_error(fake: FakeElement, client) -> None:
    api = client()
    api.list_backups(make_policy())
    unauthenticated = {"code": 16, "status": "UNAUTHENTICATED", "message": "expired"}
    fake.next_status = [(401, unauthenticated), (401, unauthenticated)]
    with pytest.raises(AuthError):
        api.list_backups(make_policy())
    assert fake.tokens == 2


def test_refused_credentials_never_show_the_secret(fake: FakeElement, client) -> None:
    fake.token_answer = (
        401,
        {"error_code": "invalid_client", "error_description": f"bad {SECRET} / {BASIC}"},
    )
    with pytest.raises(AuthError) as caught:
        client().list_backups(make_policy())
    text = str(caught.value)
    assert "element-main: POST /console/sys/token" in text and "invalid_client" in text
    assert SECRET not in text and BASIC not in text
    assert "Bearer" not in text


def test_delete_and_delete_again(fake: FakeElement, client) -> None:
    fake.dumps = [dump("gone")]
    api = client()
    api.delete(make_policy(), "gone")
    api.delete(make_policy(), "gone")  # a repeat after a lost answer is not an error
    assert fake.dumps == []


def test_poll_unknown_dump_names_the_call(fake: FakeElement, client) -> None:
    with pytest.raises(PermanentApiError, match=r"GET .*/dumps/nope: HTTP 404: NOT_FOUND: no dump"):
        client().poll(make_policy(), "nope")


def test_date_parsing_variants() -> None:
    assert element.parse_date("01.02.2024 03:04:05") == datetime(2024, 2, 1, 3, 4, 5, tzinfo=UTC)
    assert element.parse_date("2024-02-01T03:04:05") == datetime(2024, 2, 1, 3, 4, 5, tzinfo=UTC)
    assert element.parse_date("2024-02-01T06:04:05+03:00") == datetime(
        2024, 2, 1, 3, 4, 5, tzinfo=UTC
    )
    assert element.parse_date("yesterday") is None
    assert element.parse_date(None) is None
