"""The emulated Era API: sessions, roleapps CRUD, LOOKUP, archive, list grammar, control.

Most cases call ``EraApi.handle`` directly; the cookie flow and paging also run over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.emulator import core, era, era_query, server, storage

from .conftest import ERA_CREDENTIALS, FakeClock, login_token, request

ROLEAPPS = "/rest/v1/domain/roleapps"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d\dZ$")
LOGIN = {
    "domain": ERA_CREDENTIALS["domain"],
    "login": ERA_CREDENTIALS["login"],
    "pwd": ERA_CREDENTIALS["password"],
}


def call(api: era.EraApi, method: str, path: str, auth: dict[str, str], **kw: Any) -> Any:
    """``(status, parsed JSON body or None)`` of one call through ``handle``."""
    response = api.handle(request(method, path, headers=auth, **kw))
    return response.status, (json.loads(response.body) if response.body else None)


def create(api: era.EraApi, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    status, body = call(api, "POST", ROLEAPPS, auth, body={"folder": "f", **fields})
    assert status == 200, body
    return body


# --- sessions ---------------------------------------------------------------------------


def test_bearer_login_then_call(era_api: era.EraApi) -> None:
    auth = login_token(era_api)
    assert call(era_api, "GET", ROLEAPPS, auth) == (200, [])
    assert call(era_api, "GET", ROLEAPPS, {}) == (
        401,
        {"error_code": 1401, "error_message": "no session: log in first"},
    )


def test_cookie_login_over_http(
    served: tuple[server.EmulatorServer, era.EraApi], make_client: Callable[..., httpx.Client]
) -> None:
    client = make_client(served[0].url_for("era"), login=False)
    response = client.post("/rest/v1/iam/sessions", json=LOGIN)
    assert response.status_code == 200
    assert "session_token" not in response.json()
    assert "EraSession" in client.cookies
    assert client.get(ROLEAPPS).status_code == 200  # the cookie jar sends EraSession
    assert client.delete("/rest/v1/iam/sessions/current").status_code == 204
    assert client.get(ROLEAPPS).status_code == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({**LOGIN, "pwd": "wrong"}, 401),
        ({**LOGIN, "login": "someone"}, 401),
        ({"domain": "sandbox.era", "login": "converge"}, 400),
        ([1, 2], 400),
    ],
)
def test_bad_logins(era_api: era.EraApi, body: Any, status: int) -> None:
    code, answer = call(era_api, "POST", "/rest/v1/iam/sessions", {}, body=body)
    assert code == status
    assert answer["error_code"] == 1000 + status


def test_session_expires_after_inactivity(era_api: era.EraApi, clock: FakeClock) -> None:
    auth = login_token(era_api)
    clock.advance(599)
    assert call(era_api, "GET", ROLEAPPS, auth)[0] == 200  # using it keeps it alive
    clock.advance(599)
    assert call(era_api, "GET", ROLEAPPS, auth)[0] == 200
    clock.advance(601)
    status, body = call(era_api, "GET", ROLEAPPS, auth)
    assert (status, body["error_code"]) == (401, 1401)


def test_session_idle_timeout_is_configurable(clock: FakeClock) -> None:
    api = era.EraApi(storage.Storage(), clock=clock, session_idle=5)
    auth = login_token(api)
    clock.advance(6)
    assert call(api, "GET", ROLEAPPS, auth)[0] == 401


def test_five_failed_logins_ban_the_ip(era_api: era.EraApi, clock: FakeClock) -> None:
    bad = {**LOGIN, "pwd": "nope"}
    for _ in range(5):
        assert call(era_api, "POST", "/rest/v1/iam/sessions", {}, body=bad)[0] == 401
    status, body = call(era_api, "POST", "/rest/v1/iam/sessions", {}, body=LOGIN)
    assert (status, body["error_code"]) == (403, 1403)
    assert "banned" in body["error_message"]
    login_token(era_api, client="10.0.0.2")  # another IP is not banned
    clock.advance(181)
    login_token(era_api)  # the ban ends


def test_failures_spread_over_more_than_three_minutes_do_not_ban(
    era_api: era.EraApi, clock: FakeClock
) -> None:
    bad = {**LOGIN, "pwd": "nope"}
    for _ in range(8):
        assert call(era_api, "POST", "/rest/v1/iam/sessions", {}, body=bad)[0] == 401
        clock.advance(50)
    login_token(era_api)


def test_eleventh_session_evicts_the_least_recently_used(era_api: era.EraApi) -> None:
    tokens = [login_token(era_api) for _ in range(10)]
    assert call(era_api, "GET", ROLEAPPS, tokens[0])[0] == 200  # now tokens[1] is the oldest
    newest = login_token(era_api)
    assert call(era_api, "GET", ROLEAPPS, tokens[1])[0] == 401
    for auth in (tokens[0], *tokens[2:], newest):
        assert call(era_api, "GET", ROLEAPPS, auth)[0] == 200


def test_expire_sessions_and_logout(era_api: era.EraApi) -> None:
    auth = login_token(era_api)
    assert call(era_api, "DELETE", "/rest/v1/iam/sessions/current", auth)[0] == 204
    assert call(era_api, "GET", ROLEAPPS, auth)[0] == 401
    auth = login_token(era_api)
    assert era_api.control("expire_sessions", {}) == {"expired": 1}
    assert call(era_api, "GET", ROLEAPPS, auth)[0] == 401


# --- roleapps ---------------------------------------------------------------------------


def test_create_with_client_id_fills_server_fields(era_api: era.EraApi) -> None:
    auth = login_token(era_api)
    app_id = "68f99ca9-016c-d352-e02f-50e54938780c"
    body = create(era_api, auth, id=app_id, title="АРМ", roles=["chatagent"])
    assert body == {
        "id": app_id,
        "title": "АРМ",
        "folder": "f",
        "archive": {"_links": {"self": {"href": f"{ROLEAPPS}/{app_id}/attachment"}}},
        "roles": ["chatagent"],
        "svcscriptcode": "",
        "opts": {"title": "", "comment": ""},
        "ext": {"ct": "2019-08-27T13:45:19.66Z", "lwt": "2019-08-27T13:45:19.66Z"},
    }
    status, again = call(era_api, "POST", ROLEAPPS, auth, body={"id": app_id, "folder": "g"})
    assert (status, again["error_code"]) == (409, 1409)
    assert call(era_api, "GET", f"{ROLEAPPS}/{app_id}", auth) == (200, body)


def test_create_without_id_makes_one(era_api: era.EraApi) -> None:
    body = create(era_api, login_token(era_api))
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"])


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"title": "x"}, "folder is required"),
        ({"folder": ""}, "folder"),
        ({"folder": 1}, "folder"),
        ({"folder": "f", "title": 5}, "title"),
        ({"folder": "f", "roles": "chatagent"}, "roles"),
        ({"folder": "f", "roles": [1]}, "roles"),
        ({"folder": "f", "svcscriptcode": []}, "svcscriptcode"),
        ({"folder": "f", "opts": []}, "opts"),
        ({"folder": "f", "colour": "red"}, "colour"),
        ({"folder": "f", "id": "a/b"}, "id"),
    ],
)
def test_create_validates(era_api: era.EraApi, payload: Any, fragment: str) -> None:
    status, body = call(era_api, "POST", ROLEAPPS, login_token(era_api), body=payload)
    assert (status, body["error_code"]) == (400, 1400)
    assert fragment in body["error_message"]


def test_invalid_json_is_1400(era_api: era.EraApi) -> None:
    status, body = call(era_api, "POST", ROLEAPPS, login_token(era_api), raw=b"{nope")
    assert (status, body["error_code"]) == (400, 1400)


def test_patch_changes_fields_and_lwt(era_api: era.EraApi, clock: FakeClock) -> None:
    auth = login_token(era_api)
    created = create(era_api, auth, id="app-1", title="old")
    clock.advance(12.345)
    status, body = call(
        era_api, "PATCH", f"{ROLEAPPS}/app-1", auth, body={"id": "app-1", "title": "new"}
    )
    assert status == 200
    assert body["title"] == "new"
    assert body["ext"] == {"ct": created["ext"]["ct"], "lwt": "2019-08-27T13:45:32.00Z"}
    status, body = call(era_api, "PATCH", f"{ROLEAPPS}/app-1", auth, body={"id": "other"})
    assert (status, body["error_code"], body["error_message"]) == (
        400,
        1400,
        "id cannot be changed",
    )
    assert call(era_api, "PATCH", f"{ROLEAPPS}/missing", auth, body={"title": "x"})[0] == 404


def test_patch_opts_keeps_the_attachment_info(era_api: era.EraApi) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="app-1")
    call(era_api, "PUT", f"{ROLEAPPS}/app-1/attachment", auth, raw=b"zip")
    body = {"opts": {"comment": "c", "attachment_info": {"hasha": "forged"}}}
    status, patched = call(era_api, "PATCH", f"{ROLEAPPS}/app-1", auth, body=body)
    assert status == 200
    assert patched["opts"]["comment"] == "c"
    assert patched["opts"]["attachment_info"]["hasha"].startswith("md5;")


def test_delete_and_lookup(era_api: era.EraApi) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="app-1")
    assert call(era_api, "LOOKUP", ROLEAPPS, auth, body="app-1") == (200, ["app-1"])
    assert call(era_api, "DELETE", f"{ROLEAPPS}/app-1", auth) == (204, None)
    assert call(era_api, "LOOKUP", ROLEAPPS, auth, body="app-1") == (
        404,
        {"error_code": 1404, "error_message": "Lookup failed"},
    )
    assert call(era_api, "DELETE", f"{ROLEAPPS}/app-1", auth)[0] == 404
    assert call(era_api, "GET", f"{ROLEAPPS}/app-1", auth)[0] == 404
    assert call(era_api, "LOOKUP", ROLEAPPS, auth, body=7)[0] == 400


def test_attachment_roundtrip(era_api: era.EraApi, clock: FakeClock) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="app-1")
    archive = b"PK\x03\x04" + bytes(range(256)) * 40
    path = f"{ROLEAPPS}/app-1/attachment"
    assert call(era_api, "GET", path, auth)[0] == 404
    clock.advance(1)
    assert era_api.handle(request("PUT", path, raw=archive, headers=auth)).status == 204
    info = call(era_api, "GET", f"{ROLEAPPS}/app-1", auth)[1]["opts"]["attachment_info"]
    assert info == {
        "hasha": "md5;" + hashlib.md5(archive).hexdigest().upper(),
        "mtime": "2019-08-27T13:45:20Z",
        "size": len(archive),
    }
    got = era_api.handle(request("GET", path, headers=auth))
    assert (got.status, got.body, got.headers["Content-Type"]) == (
        200,
        archive,
        "application/octet-stream",
    )
    head = era_api.handle(request("HEAD", path, headers=auth))
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", str(len(archive)))
    assert era_api.handle(request("DELETE", path, headers=auth)).status == 204
    assert "attachment_info" not in call(era_api, "GET", f"{ROLEAPPS}/app-1", auth)[1]["opts"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/rest/v1/domain/nothing", 404),
        ("GET", "/", 404),
        ("PUT", ROLEAPPS, 405),
        ("POST", f"{ROLEAPPS}/x", 405),
        ("GET", "/rest/v1/iam/sessions", 405),
    ],
)
def test_routing_errors_in_era_shape(
    era_api: era.EraApi, method: str, path: str, status: int
) -> None:
    response = era_api.handle(request(method, path, headers=login_token(era_api)))
    body = json.loads(response.body)
    assert (response.status, body["error_code"]) == (status, 1000 + status)
    assert ("Allow" in response.headers) == (status == 405)


# --- listing ----------------------------------------------------------------------------


def seed(api: era.EraApi, count: int) -> list[str]:
    apps = [
        {"id": f"app-{n:05d}", "folder": f"f{n % 3}", "title": f"t{n % 7}", "roles": ["r"]}
        for n in range(count)
    ]
    return api.control("seed", {"roleapps": apps})["ids"]


def test_paging_with_a_cap_smaller_than_limit(
    served: tuple[server.EmulatorServer, era.EraApi], era_client: httpx.Client
) -> None:
    api = served[1]
    ids = seed(api, 10)
    api.control("set_page_cap", {"page_cap": 3})
    seen: list[str] = []
    pages = []
    offset = 0
    for _ in range(20):  # bounded: 10 objects in pages of 3 end well before
        page = era_client.get(ROLEAPPS, params={"offset": offset, "limit": 5}).json()
        pages.append(len(page))
        if not page:
            break
        seen += [entity["id"] for entity in page]
        offset += len(page)
    assert pages == [3, 3, 3, 1, 0]  # a short page (3 < 5, then 1) is not the end
    assert seen == sorted(ids)


def test_default_limit_applies_without_limit(era_api: era.EraApi) -> None:
    seed(era_api, 150)
    auth = login_token(era_api)
    assert len(call(era_api, "GET", ROLEAPPS, auth)[1]) == 100
    era_api.control("set_page_cap", {"default_limit": 20})
    assert len(call(era_api, "GET", ROLEAPPS, auth)[1]) == 20
    assert len(call(era_api, "GET", ROLEAPPS, auth, query={"offset": "140"})[1]) == 10


def test_default_order_is_creation_then_id(era_api: era.EraApi, clock: FakeClock) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="b")
    create(era_api, auth, id="a")
    clock.advance(1)
    create(era_api, auth, id="0-later")
    listed = [e["id"] for e in call(era_api, "GET", ROLEAPPS, auth)[1]]
    assert listed == ["a", "b", "0-later"]


def test_mask_filter_order_flat(era_api: era.EraApi) -> None:
    seed(era_api, 12)
    auth = login_token(era_api)
    query = {
        "mask": "id,title,ext.ct,archive",
        "filter": json.dumps({"folder": "f1", "roles": ["r"]}),
        "order": json.dumps([{"title": "desc"}, "id"]),
        "flat": "true",
    }
    status, body = call(era_api, "GET", ROLEAPPS, auth, query=query)
    assert status == 200
    # folder f1: n = 1, 4, 7, 10 → titles t1, t4, t0, t3
    assert [(e["id"], e["title"]) for e in body] == [
        ("app-00004", "t4"),
        ("app-00010", "t3"),
        ("app-00001", "t1"),
        ("app-00007", "t0"),
    ]
    assert set(body[0]) == {"id", "title", "ext.ct", "archive._links.self.href"}
    dotted = {"filter": json.dumps({"ext.ct": body[0]["ext.ct"], "title": "t4"}), "mask": "id"}
    assert call(era_api, "GET", ROLEAPPS, auth, query=dotted)[1] == [
        {"id": "app-00004"},
        {"id": "app-00011"},
    ]


def test_a_listed_page_is_the_compact_json_of_its_shaped_entities(era_api: era.EraApi) -> None:
    seed(era_api, 5)
    auth = login_token(era_api)
    create(era_api, auth, id="ru", title="АРМ оператора")
    for query in ({}, {"mask": "id,title"}, {"mask": "title,ext.ct", "flat": "true"}):
        for _ in range(2):  # the second answer comes from the cached encodings
            response = era_api.handle(request("GET", ROLEAPPS, headers=auth, query=query))
            shaped = json.loads(response.body)
            expected = json.dumps(shaped, ensure_ascii=False, separators=(",", ":"))
            assert response.body == expected.encode("utf-8")
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert b"\xd0\x90\xd0\xa0\xd0\x9c" in response.body  # Cyrillic sent as UTF-8, not \u escapes


def test_listed_pages_follow_every_write(era_api: era.EraApi, clock: FakeClock) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="a", title="one")
    create(era_api, auth, id="b", title="two")
    query = {"mask": "id,title"}
    assert call(era_api, "GET", ROLEAPPS, auth, query=query)[1] == [
        {"id": "a", "title": "one"},
        {"id": "b", "title": "two"},
    ]
    call(era_api, "PATCH", f"{ROLEAPPS}/a", auth, body={"title": "edited"})
    era_api.control("edit", {"id": "b", "fields": {"title": "by hand"}})
    assert call(era_api, "GET", ROLEAPPS, auth, query=query)[1] == [
        {"id": "a", "title": "edited"},
        {"id": "b", "title": "by hand"},
    ]
    call(era_api, "DELETE", f"{ROLEAPPS}/a", auth)
    clock.advance(1)
    create(era_api, auth, id="a", title="again")  # the same id, a new entity
    era_api.control("seed", {"roleapps": [{"id": "b", "folder": "f", "title": "seeded"}]})
    assert call(era_api, "GET", ROLEAPPS, auth, query=query)[1] == [
        {"id": "a", "title": "again"},
        {"id": "b", "title": "seeded"},  # seeded anew: created now, after "a" by id
    ]
    era_api.control("reset", {})
    auth = login_token(era_api)
    assert call(era_api, "GET", ROLEAPPS, auth, query=query)[1] == []


def test_a_written_roleapp_is_stored_as_it_was_answered(tmp_path: Path, clock: FakeClock) -> None:
    api = era.EraApi(storage.Storage(tmp_path / "era.db"), clock=clock)
    auth = login_token(api)
    created = create(api, auth, id="x", title="АРМ оператора", opts={"visible": True})
    assert created["title"] == "АРМ оператора"
    status, patched = call(api, "PATCH", f"{ROLEAPPS}/x", auth, body={"roles": ["a"]})
    assert status == 200
    api.close()
    reopened = storage.Storage(tmp_path / "era.db")
    try:
        assert reopened.get("roleapps", "x") == patched
    finally:
        reopened.close()


def test_get_with_mask_and_flat(era_api: era.EraApi) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="app-1", opts={"visible": True, "recv_timeout": 30})
    path = f"{ROLEAPPS}/app-1"
    masked = call(era_api, "GET", path, auth, query={"mask": "id,opts.visible,ext.lwt"})[1]
    assert masked == {
        "id": "app-1",
        "opts": {"visible": True},
        "ext": {"lwt": masked["ext"]["lwt"]},
    }
    flat = call(era_api, "GET", path, auth, query={"mask": "opts", "flat": "true"})[1]
    assert flat == {"opts.visible": True, "opts.recv_timeout": 30}


@pytest.mark.parametrize(
    "query",
    [
        {"filter": "{nope"},
        {"filter": "[1]"},
        {"order": "{bad"},
        {"order": json.dumps([{"title": "up"}])},
        {"offset": "x"},
        {"limit": "-1"},
        {"mask": "id,,title"},
        {"flat": "maybe"},
    ],
)
def test_bad_list_parameters(era_api: era.EraApi, query: dict[str, str]) -> None:
    status, body = call(era_api, "GET", ROLEAPPS, login_token(era_api), query=query)
    assert (status, body["error_code"]) == (400, 1400)


def test_listing_ten_thousand_in_pages_is_fast(era_api: era.EraApi) -> None:
    seed(era_api, 10_000)
    auth = login_token(era_api)
    started = time.perf_counter()
    seen = 0
    for offset in range(0, 10_500, 500):
        status, page = call(
            era_api, "GET", ROLEAPPS, auth, query={"offset": str(offset), "limit": "500"}
        )
        assert status == 200
        seen += len(page)
    assert seen == 10_000
    assert time.perf_counter() - started < 5.0  # ~0.3 s idle; room for a loaded CI box


# --- control ----------------------------------------------------------------------------


def test_seed_keeps_given_fields_and_fills_the_rest(era_api: era.EraApi) -> None:
    given = {"id": "s1", "folder": "x", "ext": {"ct": "2020-01-01T00:00:00.00Z"}}
    assert era_api.control("seed", {"roleapps": [given, {"folder": "y"}]})["ids"][0] == "s1"
    body = call(era_api, "GET", f"{ROLEAPPS}/s1", login_token(era_api))[1]
    assert body["ext"]["ct"] == "2020-01-01T00:00:00.00Z"
    assert TIMESTAMP.match(body["ext"]["lwt"])
    assert body["archive"]["_links"]["self"]["href"] == f"{ROLEAPPS}/s1/attachment"
    with pytest.raises(core.BadRequest):
        era_api.control("seed", {"roleapps": "nope"})


def test_edit_is_a_human_change(era_api: era.EraApi, clock: FakeClock) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="app-1")
    clock.advance(60)
    edited = era_api.control("edit", {"id": "app-1", "fields": {"title": "x", "opts.comment": "y"}})
    assert (edited["title"], edited["opts"]["comment"]) == ("x", "y")
    assert edited["ext"]["lwt"] == "2019-08-27T13:46:19.66Z"
    assert call(era_api, "GET", f"{ROLEAPPS}/app-1", auth)[1] == edited
    with pytest.raises(core.EmuError):
        era_api.control("edit", {"id": "missing", "fields": {}})


def test_stats_reset_and_fault_rules(era_api: era.EraApi) -> None:
    auth = login_token(era_api)
    create(era_api, auth, id="app-1")
    call(era_api, "GET", f"{ROLEAPPS}/app-1", auth)
    stats = era_api.control("stats", {})
    assert stats["logins"] == 1
    assert stats["calls"]["GET /rest/v1/domain/roleapps/{id}"] == 1
    assert stats["roleapps"] == 1
    era_api.control("fail", {"method": "GET", "path_regex": "roleapps/", "status": 503})
    assert call(era_api, "GET", f"{ROLEAPPS}/app-1", auth) == (
        503,
        {"error_code": 1503, "error_message": "injected failure"},
    )
    assert call(era_api, "GET", f"{ROLEAPPS}/app-1", auth)[0] == 200  # times defaults to 1
    era_api.control("reset", {})
    assert call(era_api, "GET", ROLEAPPS, auth)[0] == 401  # sessions are gone too
    assert call(era_api, "GET", ROLEAPPS, login_token(era_api)) == (200, [])
    with pytest.raises(core.EmuError):
        era_api.control("nonsense", {})


def test_timestamps_have_two_fraction_digits() -> None:
    assert era_query.timestamp(1_566_913_519.669) == "2019-08-27T13:45:19.66Z"
    assert era_query.timestamp(1_566_913_519.0) == "2019-08-27T13:45:19.00Z"
    assert TIMESTAMP.match(era_query.timestamp(time.time()))


def test_credentials_and_other_accounts(clock: FakeClock) -> None:
    assert era.EraApi(storage.Storage()).credentials() == {
        "domain": "sandbox.era",
        "login": "converge",
        "password": "sandbox-era-pass",
    }
    other = {"domain": "d", "login": "l", "password": "p"}
    api = era.EraApi(storage.Storage(), clock=clock, accounts=[other])
    assert api.credentials() == other
    body = {"domain": "d", "login": "l", "pwd": "p", "session_type": "api"}
    assert call(api, "POST", "/rest/v1/iam/sessions", {}, body=body)[0] == 200
    assert (
        call(api, "POST", "/rest/v1/iam/sessions", {}, body={**LOGIN, "session_type": "api"})[0]
        == 401
    )
