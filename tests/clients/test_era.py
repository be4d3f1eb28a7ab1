"""EraClient against the in-memory FakeEra (conftest): paging, CRUD, create recovery."""

from __future__ import annotations

import httpx
import pytest

from controller import errors
from controller.clients import era, http


def seed(fake, count: int) -> list[str]:
    ids = [f"00000000-0000-0000-0000-{n:012d}" for n in range(count)]
    for n, rid in enumerate(ids):
        fake.roleapps[rid] = {"id": rid, "folder": f"app{n}", "title": f"App {n}"}
    return ids


def list_calls(fake) -> list[tuple[str, str]]:
    return [c for c in fake.calls if c == ("GET", era.ROLEAPPS)]


# -- login -----------------------------------------------------------------------------


def test_login_sends_era_credentials_and_uses_the_bearer_token(fake_era, make_era):
    seed(fake_era, 1)
    client = make_era()
    assert len(client.list_roleapps()) == 1
    assert fake_era.logins == 1
    assert len(fake_era.tokens) == 1

    client.close()

    assert fake_era.tokens == set()  # logged out
    assert fake_era.calls[-1] == ("DELETE", era.LOGOUT)


def test_bad_credentials_are_one_auth_error_without_the_password(fake_era, make_era):
    fake_era.password = "something-else"
    client = make_era()

    for _ in range(2):
        with pytest.raises(errors.AuthError) as caught:
            client.get("x")
        assert "s3cret-era-pass" not in str(caught.value)
        assert str(caught.value).startswith("era-main: POST /rest/v1/iam/sessions: HTTP 401: ")

    assert fake_era.calls == [("POST", era.SESSIONS)]
    client.close()


def test_an_expired_session_mid_listing_is_renewed(fake_era, make_era):
    seed(fake_era, 250)
    fake_era.page_cap = 50
    original = fake_era._collection

    def expire_after_two_pages(request):
        if len(list_calls(fake_era)) == 3:
            fake_era.expire()
            return era_error(401, "session expired")
        return original(request)

    fake_era._collection = expire_after_two_pages
    client = make_era(concurrency=1)

    assert len(client.list_roleapps()) == 250
    assert fake_era.logins == 2


def era_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error_code": 1000 + status, "error_message": message})


def test_era_errors_read_like_the_spec(fake_era, make_era):
    with pytest.raises(errors.PermanentApiError) as caught:
        make_era().create({"id": "a", "title": "no folder"})
    assert str(caught.value) == (
        "era-main: POST /rest/v1/domain/roleapps: HTTP 400: folder is required"
    )


# -- listing ---------------------------------------------------------------------------


def test_an_empty_listing_is_one_call(fake_era, make_era):
    assert make_era().list_roleapps() == []
    assert len(list_calls(fake_era)) == 1


def test_a_small_listing_is_two_calls(fake_era, make_era):
    ids = seed(fake_era, 3)
    assert [o["id"] for o in make_era().list_roleapps()] == ids
    assert len(list_calls(fake_era)) == 2


@pytest.mark.parametrize("count", [1234, 1200, 100, 99, 101])
def test_a_capped_server_gives_short_pages_that_are_not_the_end(fake_era, make_era, count):
    ids = seed(fake_era, count)
    fake_era.page_cap = 100

    listed = make_era(concurrency=4).list_roleapps(page_size=500)

    assert [o["id"] for o in listed] == ids
    # One probe after the first page, then windows of 4; the window that holds the
    # first empty page is the last.
    assert len(list_calls(fake_era)) <= count // 100 + 2 + 4


def test_full_pages_are_fetched_a_window_at_a_time(fake_era, make_era):
    ids = seed(fake_era, 1000)
    listed = make_era(concurrency=8).list_roleapps(page_size=100)
    assert [o["id"] for o in listed] == ids
    assert len(list_calls(fake_era)) == 1 + 8 + 8  # first page, window 100-800, window 900-


def test_a_page_shorter_than_the_stride_leaves_no_gap(fake_era, make_era):
    ids = seed(fake_era, 700)
    original = fake_era._collection
    shortened = []

    def short_once(request):
        response = original(request)
        if request.url.params.get("offset") == "200" and not shortened:
            shortened.append(True)
            return httpx.Response(200, json=response.json()[:30])
        return response

    fake_era._collection = short_once
    listed = make_era(concurrency=4).list_roleapps(page_size=100)
    assert [o["id"] for o in listed] == ids


def test_objects_shifting_between_pages_are_listed_once(fake_era, make_era):
    seed(fake_era, 300)
    original = fake_era._collection

    def insert_at_front(request):
        response = original(request)
        if request.url.params.get("offset") == "0":
            # A new object sorts first: every later page starts one object earlier.
            fake_era.roleapps = {"new": {"id": "new", "folder": "n"}, **fake_era.roleapps}
        return response

    fake_era._collection = insert_at_front
    listed = make_era(concurrency=1).list_roleapps(page_size=100)
    ids = [o["id"] for o in listed]
    assert len(ids) == len(set(ids)) == 300


def test_the_mask_asks_only_the_fields_needed_plus_id(fake_era, make_era):
    seed(fake_era, 2)
    listed = make_era().list_roleapps(fields=["title", "ext.lwt"])
    assert listed[0] == {"id": "00000000-0000-0000-0000-000000000000", "title": "App 0"}


def test_a_listing_that_is_not_an_array_is_refused(make_session):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": []})

    client = era.EraClient(make_session(handler))
    with pytest.raises(errors.PermanentApiError, match="expected a JSON array"):
        client.list_roleapps()


# -- reads and writes ------------------------------------------------------------------


def test_get_and_lookup(fake_era, make_era):
    (rid,) = seed(fake_era, 1)
    client = make_era()
    assert client.get(rid)["folder"] == "app0"
    assert client.get("missing") is None
    assert client.lookup(rid) is True
    assert client.lookup("missing") is False
    assert ("LOOKUP", era.ROLEAPPS) in fake_era.calls


def test_create_update_delete(fake_era, make_era):
    client = make_era()
    created = client.create({"id": "r1", "folder": "f", "title": "T"})
    assert created == {"id": "r1", "folder": "f", "title": "T"}
    assert client.update("r1", {"title": "U"})["title"] == "U"
    client.delete("r1")
    client.delete("r1")  # already gone: fine
    assert fake_era.roleapps == {}


def test_ids_are_quoted_into_the_path(make_session):
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return era_error(404, "not found")

    assert era.EraClient(make_session(handler)).get("../../iam/sessions") is None
    assert seen == [b"/era/rest/v1/domain/roleapps/..%2F..%2Fiam%2Fsessions"]


def test_a_create_whose_answer_was_lost_is_found_by_lookup(fake_era, make_era):
    fake_era.fault("POST", era.ROLEAPPS, "drop")  # created, then the answer is lost
    client = make_era()

    created = client.create({"id": "r1", "folder": "f"})

    assert created == {"id": "r1", "folder": "f"}
    assert list(fake_era.roleapps) == ["r1"]
    posts = [c for c in fake_era.calls if c == ("POST", era.ROLEAPPS)]
    assert len(posts) == 1
    assert ("LOOKUP", era.ROLEAPPS) in fake_era.calls


def test_a_create_lost_before_the_work_is_repeated_once(fake_era, make_era):
    fake_era.fault("POST", era.ROLEAPPS, 502)  # a gateway failed; nothing was created
    client = make_era()

    assert client.create({"id": "r1", "folder": "f"})["id"] == "r1"
    posts = [c for c in fake_era.calls if c == ("POST", era.ROLEAPPS)]
    assert len(posts) == 2
    assert list(fake_era.roleapps) == ["r1"]


def test_a_create_refused_with_conflict_returns_the_existing_object(fake_era, make_era):
    fake_era.roleapps["r1"] = {"id": "r1", "folder": "old"}
    assert make_era().create({"id": "r1", "folder": "new"}) == {"id": "r1", "folder": "old"}


def test_a_create_that_keeps_losing_answers_gives_up(fake_era, make_era):
    fake_era.fault("POST", era.ROLEAPPS, 504, 504, 504, 504)
    with pytest.raises(errors.TransientApiError) as caught:
        make_era().create({"id": "r1", "folder": "f"})
    assert caught.value.maybe_applied
    assert fake_era.roleapps == {}
    assert len([c for c in fake_era.calls if c == ("POST", era.ROLEAPPS)]) == era.CREATE_ROUNDS


def test_update_is_repeated_after_a_lost_answer(fake_era, make_era):
    seed(fake_era, 1)
    rid = next(iter(fake_era.roleapps))
    fake_era.fault("PATCH", f"{era.ROLEAPPS}/{rid}", "drop")
    assert make_era().update(rid, {"title": "U"})["title"] == "U"


def test_upload_archive(fake_era, make_era):
    (rid,) = seed(fake_era, 1)
    make_era().upload_archive(rid, b"PK\x03\x04zip")
    assert fake_era.archives[rid] == ("application/octet-stream", b"PK\x03\x04zip")


def test_connect_from_a_connection_manifest():
    from controller import manifests

    connection = manifests.Connection(
        name="era-main",
        api=manifests.Api.ERA,
        url="sandbox",
        auth={"domain": "d", "login": "l", "password": "p-secret"},
        concurrency=3,
        source=manifests.SourceLocation("c.yaml", 1),
    )
    client = era.EraClient.from_connection(connection, base_url="http://127.0.0.1:1/era")
    assert client.connection == "era-main"
    assert client.session.settings.concurrency == 3
    assert "p-secret" in client.session.secrets
    client.close()


def test_error_message_falls_back_to_the_body():
    response = http.HttpResponse(500, http.Headers(), b"plain failure", "GET", "/x")
    assert era.error_message(response) == "plain failure"
