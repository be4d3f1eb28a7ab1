"""The emulated element console: tokens, dumps over time, error shapes, variants, seeding."""

from __future__ import annotations

import base64
import email.message
import json
from typing import Any

import httpx
import pytest

from controller.emulator import core, server
from controller.emulator.element import ElementApi
from controller.emulator.storage import Storage

APP = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER_APP = "0b7c5e7e-2f7e-4a57-9f0e-7f3a1c1d2e3f"
DUMPS = f"/console/api/v2/applications/{APP}/dumps"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def request(
    method: str, path: str, *, body: Any = None, raw: bytes = b"", **headers: str
) -> core.EmuRequest:
    message = email.message.Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    payload = raw if body is None else json.dumps(body).encode()
    return core.EmuRequest(method, path, {}, message, payload)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def answer(response: core.EmuResponse) -> Any:
    return json.loads(response.body) if response.body else None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> ElementApi:
    emulator = ElementApi(Storage(), clock=clock)
    emulator.control("seed_application", {"id": APP, "name": "CRM"})
    return emulator


def login(api: ElementApi) -> str:
    response = api.handle(
        request(
            "POST",
            "/console/sys/token",
            raw=b"grant_type=client_credentials",
            Authorization=basic("converge", "sandbox-element-secret"),
            Content_Type="application/x-www-form-urlencoded",
        )
    )
    assert response.status == 200
    return answer(response)["id_token"]


def call(api: ElementApi, method: str, path: str, token: str, body: Any = None) -> core.EmuResponse:
    return api.handle(request(method, path, body=body, Authorization=f"Bearer {token}"))


# --- authentication ----------------------------------------------------------------------


def test_token_answer_has_the_documented_shape(api: ElementApi) -> None:
    response = api.handle(
        request(
            "POST",
            "/console/sys/token",
            raw=b"grant_type=client_credentials",
            Authorization=basic("converge", "sandbox-element-secret"),
        )
    )
    body = answer(response)
    assert set(body) == {"id_token", "token_type", "access_token"}
    assert body["token_type"] == "Bearer"
    assert body["access_token"] == "Not implemented"
    _header, claims, _ = body["id_token"].split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert decoded["sub"] == "converge"
    assert decoded["exp"] - decoded["iat"] == 3600
    assert api.control("stats", {})["logins"] == 1


@pytest.mark.parametrize(
    "authorization",
    [basic("converge", "wrong"), basic("someone", "sandbox-element-secret"), "Basic !!", ""],
)
def test_bad_client_credentials_get_401_code_16(api: ElementApi, authorization: str) -> None:
    response = api.handle(
        request(
            "POST",
            "/console/sys/token",
            raw=b"grant_type=client_credentials",
            Authorization=authorization,
        )
    )
    assert response.status == 401
    assert answer(response)["code"] == 16
    assert api.control("stats", {})["failed_logins"] == 1


def test_token_needs_the_client_credentials_grant(api: ElementApi) -> None:
    response = api.handle(
        request(
            "POST",
            "/console/sys/token",
            raw=b"grant_type=password",
            Authorization=basic("converge", "sandbox-element-secret"),
        )
    )
    assert response.status == 400
    assert answer(response)["code"] == 3


def test_calls_without_a_token_get_401(api: ElementApi) -> None:
    response = api.handle(request("GET", DUMPS))
    assert response.status == 401
    assert answer(response) == {
        "code": 16,
        "status": "UNAUTHENTICATED",
        "message": "authentication required: send a Bearer id_token",
        "details": "",
    }


def test_token_expires_after_its_lifetime(api: ElementApi, clock: Clock) -> None:
    token = login(api)
    clock.advance(3599)
    assert call(api, "GET", DUMPS, token).status == 200
    clock.advance(1)
    response = call(api, "GET", DUMPS, token)
    assert response.status == 401
    assert answer(response)["code"] == 16


def test_token_lifetime_is_configurable(api: ElementApi, clock: Clock) -> None:
    api.control("set_session_lifetime", {"seconds": 10})
    token = login(api)
    clock.advance(10)
    assert call(api, "GET", DUMPS, token).status == 401


def test_expired_token_variant_answers_400_invalid_request(api: ElementApi, clock: Clock) -> None:
    api.control("set_variant", {"expired_token": "400"})
    token = login(api)
    clock.advance(4000)
    response = call(api, "GET", DUMPS, token)
    assert response.status == 400
    assert answer(response)["error_code"] == "invalid_request"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJ.eyJ.sig"])
def test_malformed_token_gets_400_invalid_request(api: ElementApi, token: str) -> None:
    response = call(api, "GET", DUMPS, token)
    assert response.status == 400
    body = answer(response)
    assert body["error_code"] == "invalid_request"
    assert body["error_description"]


def test_malformed_token_variant_answers_401(api: ElementApi) -> None:
    api.control("set_variant", {"malformed_token": "401"})
    response = call(api, "GET", DUMPS, "garbage")
    assert response.status == 401
    assert answer(response)["code"] == 16


def test_tampered_token_is_malformed(api: ElementApi) -> None:
    header, _claims, signature = login(api).split(".")
    forged = base64.urlsafe_b64encode(b'{"jti":"x"}').rstrip(b"=").decode()
    assert call(api, "GET", DUMPS, f"{header}.{forged}.{signature}").status == 400


def test_expire_sessions_revokes_every_token(api: ElementApi) -> None:
    token = login(api)
    assert api.control("expire_sessions", {}) == {"expired": 1}
    assert call(api, "GET", DUMPS, token).status == 401
    assert call(api, "GET", DUMPS, login(api)).status == 200


# --- applications and dumps --------------------------------------------------------------


def test_application_is_readable(api: ElementApi) -> None:
    token = login(api)
    response = call(api, "GET", f"/console/api/v2/applications/{APP}", token)
    assert answer(response) == {"id": APP, "name": "CRM", "status": "Ready"}


def test_non_uuid_ids_get_400_code_3(api: ElementApi) -> None:
    token = login(api)
    response = call(api, "GET", "/console/api/v2/applications/1111/dumps", token)
    assert response.status == 400
    assert answer(response) == {
        "code": 3,
        "status": "INVALID_ARGUMENT",
        "message": "1111 is not a valid UUID.",
        "details": "",
    }
    assert call(api, "GET", f"{DUMPS}/1111", token).status == 400


def test_unknown_application_gets_404_code_5(api: ElementApi) -> None:
    token = login(api)
    response = call(api, "GET", f"/console/api/v2/applications/{OTHER_APP}/dumps", token)
    assert response.status == 404
    assert answer(response)["code"] == 5
    assert answer(response)["status"] == "NOT_FOUND"


def test_wrapped_error_variant(api: ElementApi) -> None:
    api.control("set_variant", {"error_shape": "wrapped"})
    token = login(api)
    response = call(api, "GET", f"/console/api/v2/applications/{OTHER_APP}", token)
    assert response.status == 404
    error = answer(response)["error"]
    assert error["code"] == 5
    assert error["details"] == []
    assert "not found" in error["message"]


CREATE = {
    "include-users": True,
    "include-binary-data": False,
    "include-collaboration-registration-data": True,
    "description": "nightly",
}


def test_dump_is_created_then_becomes_ready(api: ElementApi, clock: Clock) -> None:
    token = login(api)
    response = call(api, "POST", DUMPS, token, CREATE)
    assert response.status == 201
    created = answer(response)
    assert isinstance(created, list) and len(created) == 1
    dump = created[0]
    assert dump["status"] == "Creating"
    assert dump["include-binary-data"] is False
    assert dump["description"] == "nightly"
    assert dump["date-created"] == "14.11.2023 22:13:20"
    assert dump["application-size-bytes"] == 0
    clock.advance(0.49)
    assert answer(call(api, "GET", f"{DUMPS}/{dump['id']}", token))["status"] == "Creating"
    clock.advance(0.01)
    ready = answer(call(api, "GET", f"{DUMPS}/{dump['id']}", token))
    assert ready["status"] == "Ready"
    assert ready["application-size-bytes"] > 0
    assert ready["user-list-size-bytes"] > 0
    assert ready["application-file-ref"]
    assert "error-message" not in ready


def test_create_variant_answers_a_single_object(api: ElementApi) -> None:
    api.control("set_variant", {"create_response": "object"})
    dump = answer(call(api, "POST", DUMPS, login(api), CREATE))
    assert isinstance(dump, dict) and dump["status"] == "Creating"


def test_iso_date_variant(api: ElementApi, clock: Clock) -> None:
    clock.now = 1_705_501_624.383
    api.control("set_variant", {"date_format": "iso"})
    dump = answer(call(api, "POST", DUMPS, login(api), CREATE))[0]
    assert dump["date-created"] == "2024-01-17T14:27:04.383Z"


def test_set_duration_controls_progress(api: ElementApi, clock: Clock) -> None:
    api.control("set_duration", {"seconds": 60})
    token = login(api)
    dump = answer(call(api, "POST", DUMPS, token, CREATE))[0]
    clock.advance(59)
    assert answer(call(api, "GET", f"{DUMPS}/{dump['id']}", token))["status"] == "Creating"
    clock.advance(1)
    assert answer(call(api, "GET", f"{DUMPS}/{dump['id']}", token))["status"] == "Ready"


def test_fail_next_backup_ends_in_error(api: ElementApi, clock: Clock) -> None:
    api.control("fail_next_backup", {"message": "disk full"})
    token = login(api)
    failing = answer(call(api, "POST", DUMPS, token, CREATE))[0]
    fine = answer(call(api, "POST", DUMPS, token, CREATE))[0]
    assert failing["status"] == "Creating"
    clock.advance(1)
    failed = answer(call(api, "GET", f"{DUMPS}/{failing['id']}", token))
    assert failed["status"] == "Error"
    assert failed["error-message"] == "disk full"
    assert failed["application-size-bytes"] == 0
    assert answer(call(api, "GET", f"{DUMPS}/{fine['id']}", token))["status"] == "Ready"


def test_bad_create_body_gets_400(api: ElementApi) -> None:
    token = login(api)
    assert call(api, "POST", DUMPS, token, {"include-users": "yes"}).status == 400
    assert call(api, "POST", DUMPS, token, ["x"]).status == 400
    response = api.handle(request("POST", DUMPS, raw=b"{not json", Authorization=f"Bearer {token}"))
    assert response.status == 400
    assert answer(response)["code"] == 3


def test_list_describe_and_delete(api: ElementApi, clock: Clock) -> None:
    token = login(api)
    first = answer(call(api, "POST", DUMPS, token, CREATE))[0]
    clock.advance(5)
    second = answer(call(api, "POST", DUMPS, token, {}))[0]
    listed = answer(call(api, "GET", DUMPS, token))
    assert [d["id"] for d in listed] == [first["id"], second["id"]]
    assert listed[1]["include-users"] is False
    described = call(api, "PUT", f"{DUMPS}/{first['id']}", token, {"description": "kept"})
    assert described.status == 200 and answer(described)["description"] == "kept"
    assert call(api, "PUT", f"{DUMPS}/{first['id']}", token, {"description": 1}).status == 400
    deleted = call(api, "DELETE", f"{DUMPS}/{first['id']}", token)
    assert deleted.status == 204 and deleted.body == b""
    assert call(api, "GET", f"{DUMPS}/{first['id']}", token).status == 404
    assert call(api, "DELETE", f"{DUMPS}/{first['id']}", token).status == 404
    assert [d["id"] for d in answer(call(api, "GET", DUMPS, token))] == [second["id"]]


def test_dump_of_another_application_is_not_found(api: ElementApi) -> None:
    api.control("seed_application", {"id": OTHER_APP, "name": "HR"})
    token = login(api)
    dump = answer(call(api, "POST", DUMPS, token, CREATE))[0]
    other = f"/console/api/v2/applications/{OTHER_APP}/dumps/{dump['id']}"
    assert call(api, "GET", other, token).status == 404


# --- seeding, controls, faults -----------------------------------------------------------


def test_seed_backup_looks_thirty_hours_old(api: ElementApi, clock: Clock) -> None:
    seeded = api.control("seed_backup", {"age_seconds": 108000})
    assert seeded["status"] == "Ready"
    assert seeded["date-created"] == "13.11.2023 16:13:20"  # 30 h before 14.11 22:13:20
    listed = answer(call(api, "GET", DUMPS, login(api)))
    assert [d["id"] for d in listed] == [seeded["id"]]


def test_seed_backup_failed_and_running(api: ElementApi, clock: Clock) -> None:
    failed = api.control(
        "seed_backup", {"application_id": APP, "status": "Error", "message": "no space"}
    )
    running = api.control("seed_backup", {"status": "Creating", "age_seconds": 60})
    clock.advance(10_000)
    token = login(api)
    assert answer(call(api, "GET", f"{DUMPS}/{failed['id']}", token))["status"] == "Error"
    assert answer(call(api, "GET", f"{DUMPS}/{running['id']}", token))["status"] == "Creating"


def test_seed_backup_creates_an_unknown_application(api: ElementApi) -> None:
    api.control("seed_backup", {"application_id": OTHER_APP, "include_users": False})
    response = call(api, "GET", f"/console/api/v2/applications/{OTHER_APP}/dumps", login(api))
    assert answer(response)[0]["include-users"] is False


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("seed_backup", {"age": 5}),
        ("seed_backup", {"age_seconds": -1}),
        ("seed_application", {"id": "1111"}),
        ("set_variant", {"date_format": "unix"}),
        ("set_variant", {"nope": 1}),
        ("set_duration", {"seconds": "fast"}),
    ],
)
def test_bad_control_payloads_are_refused(
    api: ElementApi, action: str, payload: dict[str, Any]
) -> None:
    with pytest.raises(core.BadRequest):
        api.control(action, payload)


def test_reset_empties_state_and_variants(api: ElementApi) -> None:
    api.control("set_variant", {"create_response": "object"})
    api.control("seed_backup", {})
    api.control("reset", {})
    assert api.variants()["create_response"] == "array"
    api.control("seed_application", {"id": APP})
    assert answer(call(api, "GET", DUMPS, login(api))) == []


def test_fail_rule_answers_in_the_error_data_shape(api: ElementApi) -> None:
    api.control("fail", {"method": "POST", "path_regex": "/dumps$", "status": 500})
    token = login(api)
    response = call(api, "POST", DUMPS, token, CREATE)
    assert response.status == 500
    assert answer(response)["code"] == 13
    assert answer(call(api, "GET", DUMPS, token)) == []  # the work was not done


def test_drop_after_work_does_the_work(api: ElementApi) -> None:
    api.control("drop_after_work", {"method": "POST", "path_regex": "/dumps$"})
    token = login(api)
    with pytest.raises(core.DropConnection):
        call(api, "POST", DUMPS, token, CREATE)
    assert len(answer(call(api, "GET", DUMPS, token))) == 1


def test_stats_count_calls_by_template(api: ElementApi) -> None:
    token = login(api)
    call(api, "GET", DUMPS, token)
    call(api, "POST", DUMPS, token, CREATE)
    stats = api.control("stats", {})
    assert stats["calls"]["GET /console/api/v2/applications/{id}/dumps"] == 1
    assert stats["counts"] == {"backups_started": 1}


def test_state_survives_a_restart(tmp_path: Any, clock: Clock) -> None:
    first = ElementApi(Storage(tmp_path / "element.db"), clock=clock)
    first.control("seed_application", {"id": APP})
    token = login(first)
    dump = answer(call(first, "POST", DUMPS, token, CREATE))[0]
    first.close()
    second = ElementApi(Storage(tmp_path / "element.db"), clock=clock)
    clock.advance(1)
    got = call(second, "GET", f"{DUMPS}/{dump['id']}", token)
    assert answer(got)["status"] == "Ready"
    second.close()


# --- over HTTP -----------------------------------------------------------------------------


def test_over_http(tmp_path: Any) -> None:
    api = ElementApi(Storage())
    with server.EmulatorServer([api]) as emulator:
        base = emulator.url_for("element")
        control = f"{emulator.url}/_control/element"
        with httpx.Client(base_url=base, timeout=5) as client:
            httpx.post(f"{control}/seed_application", json={"id": APP}).raise_for_status()
            httpx.post(f"{control}/seed_backup", json={"age_seconds": 108000}).raise_for_status()
            credentials = api.credentials()
            token = client.post(
                "/console/sys/token",
                data={"grant_type": "client_credentials"},
                auth=(credentials["clientId"], credentials["clientSecret"]),
            ).json()["id_token"]
            headers = {"Authorization": f"Bearer {token}"}
            listed = client.get(DUMPS, headers=headers)
            assert listed.status_code == 200 and len(listed.json()) == 1
            created = client.post(DUMPS, json=CREATE, headers=headers)
            assert created.status_code == 201 and created.json()[0]["status"] == "Creating"
            bad = client.get("/console/api/v2/applications/1111", headers=headers)
            assert bad.status_code == 400 and bad.json()["code"] == 3


def test_auto_create_takes_any_application_as_existing(clock: Clock) -> None:
    api = ElementApi(Storage(), clock=clock, auto_create=True)
    token = login(api)
    assert call(api, "GET", f"/console/api/v2/applications/{OTHER_APP}", token).status == 200
    assert call(api, "POST", DUMPS, token, CREATE).status == 201
