"""Unit tests for controller.diffing: managed fields only, and what an update sends."""

from __future__ import annotations

import copy
from typing import Any

from controller import diffing
from controller.manifests import Lifecycle, RoleApp, SourceLocation
from controller.plans import FieldChange

LIVE: dict[str, Any] = {
    "id": "68f99ca9-016c-d352-e02f-50e54938780c",
    "title": "First app",
    "folder": "roleapp1",
    "archive": {"_links": {"self": {"href": "/rest/v1/domain/roleapps/x/attachment"}}},
    "roles": ["chatagent", "supervisor"],
    "svcscriptcode": "chatagent_api",
    "opts": {
        "title": "",
        "comment": "live comment",
        "recv_timeout": 30,
        "visible": True,
        "attachment_info": {"hasha": "md5;9A29", "mtime": "2021-05-11T10:37:26Z", "size": 1},
    },
    "ext": {"ct": "2019-08-27T13:45:19.66Z", "lwt": "2019-08-27T13:45:19.66Z"},
}


def roleapp(fields: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> RoleApp:
    return RoleApp(
        name="chat-operator",
        connection="era-main",
        fields=fields,
        lifecycle=Lifecycle(ignore_fields=ignore),
        source=SourceLocation("manifests/era.yaml", 3),
    )


def test_matching_managed_fields_give_no_changes() -> None:
    desired = roleapp(
        {
            "folder": "roleapp1",
            "title": "First app",
            "roles": ["chatagent", "supervisor"],
            "opts": {"recv_timeout": 30, "visible": True},
        }
    )
    assert diffing.diff(desired, LIVE) == ()


def test_fields_left_out_of_the_manifest_are_not_compared() -> None:
    desired = roleapp({"folder": "roleapp1"})
    live = {**LIVE, "title": "anything", "svcscriptcode": "other", "roles": []}
    assert diffing.diff(desired, live) == ()


def test_a_changed_title_is_one_change() -> None:
    desired = roleapp({"folder": "roleapp1", "title": "АРМ оператора"})
    assert diffing.diff(desired, LIVE) == (
        FieldChange(path="title", before="First app", after="АРМ оператора"),
    )


def test_opts_compared_key_by_key() -> None:
    desired = roleapp({"folder": "roleapp1", "opts": {"visible": False, "new_key": 1}})
    assert diffing.diff(desired, LIVE) == (
        FieldChange(path="opts.new_key", before=None, after=1),
        FieldChange(path="opts.visible", before=True, after=False),
    )


def test_roles_compared_as_a_set_and_shown_sorted() -> None:
    same = roleapp({"folder": "roleapp1", "roles": ["supervisor", "chatagent", "chatagent"]})
    assert diffing.diff(same, LIVE) == ()
    other = roleapp({"folder": "roleapp1", "roles": ["zeta", "chatagent"]})
    assert diffing.diff(other, LIVE) == (
        FieldChange(path="roles", before=["chatagent", "supervisor"], after=["chatagent", "zeta"]),
    )


def test_server_owned_fields_are_never_compared() -> None:
    desired = roleapp(
        {
            "folder": "roleapp1",
            "archive": "ignored",
            "ext": {"ct": "x"},
            "opts": {"attachment_info": {"hasha": "md5;0"}, "visible": True},
        }
    )
    assert diffing.diff(desired, LIVE) == ()


def test_ignore_fields_skip_paths() -> None:
    desired = roleapp(
        {"folder": "roleapp1", "title": "New", "opts": {"comment": "git comment", "title": ""}},
        ignore=("opts.comment", "title"),
    )
    assert diffing.diff(desired, LIVE) == ()


def test_a_managed_key_missing_live_shows_as_null() -> None:
    live = {k: v for k, v in LIVE.items() if k != "svcscriptcode"}
    desired = roleapp({"folder": "roleapp1", "svcscriptcode": "chatagent_api"})
    assert diffing.diff(desired, live) == (
        FieldChange(path="svcscriptcode", before=None, after="chatagent_api"),
    )


def test_changes_are_sorted_by_path() -> None:
    desired = roleapp(
        {"folder": "x", "title": "t", "roles": ["a"], "opts": {"visible": False, "a": 1}}
    )
    paths = [change.path for change in diffing.diff(desired, LIVE)]
    assert paths == ["folder", "opts.a", "opts.visible", "roles", "title"]


def test_secret_looking_paths_are_marked_sensitive() -> None:
    desired = roleapp({"folder": "roleapp1", "opts": {"password": "${FROM_ENV}"}})
    (change,) = diffing.diff(desired, LIVE)
    assert change.sensitive


def test_fingerprint_is_stable_and_sees_any_change() -> None:
    reordered = dict(reversed(list(copy.deepcopy(LIVE).items())))
    assert diffing.fingerprint(LIVE) == diffing.fingerprint(reordered)
    touched = copy.deepcopy(LIVE)
    touched["ext"]["lwt"] = "2030-01-01T00:00:00.00Z"
    assert diffing.fingerprint(LIVE) != diffing.fingerprint(touched)
    assert len(diffing.fingerprint(LIVE)) == 64


def test_patch_body_sends_only_changed_fields_and_whole_opts_without_server_keys() -> None:
    desired = roleapp(
        {
            "folder": "roleapp1",
            "title": "New",
            "roles": ["chatagent", "supervisor"],
            "opts": {"visible": False},
        }
    )
    changes = diffing.diff(desired, LIVE)
    body = diffing.patch_body(desired, LIVE, changes)
    assert body == {
        "title": "New",
        "opts": {"title": "", "comment": "live comment", "recv_timeout": 30, "visible": False},
    }


def test_create_body_has_the_id_and_every_written_field() -> None:
    desired = roleapp(
        {"folder": "roleapp1", "title": "T", "opts": {"comment": "c"}}, ignore=("opts.comment",)
    )
    body = diffing.create_body(desired, id="abc")
    assert body == {"id": "abc", "folder": "roleapp1", "title": "T", "opts": {"comment": "c"}}
    assert body["opts"] is not desired.fields["opts"]
    assert [c.path for c in diffing.additions(body)] == ["folder", "opts.comment", "title"]
