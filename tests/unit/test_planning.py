"""Unit tests for controller.planning: identity, adoption, archives, pruning, guards, backups."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller import diffing, planning
from controller.clients.backups import BackupState, LiveBackup
from controller.manifests import (
    BackupPolicy,
    ElementApplicationSource,
    Lifecycle,
    Retention,
    RoleApp,
    SourceLocation,
)
from controller.plans import Action, ActionKind, Plan, Ref, Unmanaged
from controller.state.store import InventoryEntry

NOW = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
CONN = "era-main"
MD5 = "9a29b5c0d1e2f3a4b5c6d7e8f9a0b1c2"


def app(
    name: str,
    folder: str | None = None,
    *,
    connection: str = CONN,
    id: str | None = None,
    archive: str | None = None,
    prevent_destroy: bool = False,
    **fields: Any,
) -> RoleApp:
    return RoleApp(
        name=name,
        connection=connection,
        fields={"folder": folder or name, **fields},
        id=id,
        archive=archive,
        lifecycle=Lifecycle(prevent_destroy=prevent_destroy),
        source=SourceLocation("manifests/era.yaml", 10),
    )


def live_obj(id: str, folder: str, *, hasha: str | None = None, **fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": id, "folder": folder, "title": "", "opts": {}, **fields}
    if hasha is not None:
        obj["opts"] = {**obj["opts"], "attachment_info": {"hasha": hasha, "size": 1}}
    return obj


def entry(name: str, id: str, *, prevent_destroy: bool = False) -> InventoryEntry:
    return InventoryEntry(
        kind="RoleApp",
        connection=CONN,
        name=name,
        id=id,
        prevent_destroy=prevent_destroy,
        applied_at=NOW - timedelta(days=1),
    )


def uid(n: int) -> str:
    return str(uuid.UUID(int=n))


def plan(
    roleapps: Sequence[RoleApp] = (),
    live: Sequence[Mapping[str, Any]] = (),
    inventory: Sequence[InventoryEntry] = (),
    **kwargs: Any,
) -> Plan:
    return planning.build_plan(
        roleapps=roleapps, live={CONN: live}, inventory=inventory, now=NOW, **kwargs
    )


def kinds(result: Plan) -> list[tuple[str, str]]:
    return [(action.kind.value, action.ref.name) for action in result.actions]


def only(result: Plan) -> Action:
    (action,) = result.actions
    return action


# --- identity ------------------------------------------------------------------------------


def test_new_roleapp_is_created_with_its_deterministic_id() -> None:
    desired = app("chat-operator", title="T")
    action = only(plan([desired]))
    assert action.kind is ActionKind.CREATE
    assert action.id == desired.create_id
    assert action.desired == {"id": desired.create_id, "folder": "chat-operator", "title": "T"}
    assert action.fingerprint is None
    assert action.reason == "new roleapp"
    assert action.source == "manifests/era.yaml:10"


def test_spec_id_live_and_equal_is_unchanged() -> None:
    result = plan([app("a", id=uid(1), title="x")], [live_obj(uid(1), "a", title="x")])
    assert result.actions == ()
    assert result.unchanged == 1
    assert result.managed[0].id == uid(1)


def test_spec_id_live_and_different_is_an_update_with_a_patch() -> None:
    obj = live_obj(uid(1), "a", title="old")
    action = only(plan([app("a", id=uid(1).upper(), title="new")], [obj]))
    assert action.kind is ActionKind.UPDATE
    assert action.reason == "title differs"
    assert action.patch == {"title": "new"}
    assert action.fingerprint == diffing.fingerprint(obj)


def test_spec_id_not_live_creates_with_that_id() -> None:
    action = only(plan([app("a", id=uid(7))]))
    assert (action.kind, action.id) == (ActionKind.CREATE, uid(7))
    assert action.desired is not None and action.desired["id"] == uid(7)


def test_inventory_id_live_is_compared() -> None:
    result = plan([app("a", folder="f")], [live_obj(uid(3), "f")], [entry("a", uid(3))])
    assert result.actions == () and result.unchanged == 1


def test_inventory_id_gone_creates_again_with_the_same_id() -> None:
    action = only(plan([app("a")], [], [entry("a", uid(3))]))
    assert (action.kind, action.id) == (ActionKind.CREATE, uid(3))
    assert "gone" in action.reason


def test_own_create_id_already_live_is_compared_not_adopted() -> None:
    desired = app("a", title="t")
    result = plan([desired], [live_obj(desired.create_id, "a", title="t")])
    assert result.actions == ()
    assert result.managed[0].id == desired.create_id


def test_live_object_with_the_same_folder_is_adopted_with_its_changes() -> None:
    obj = live_obj(uid(5), "roleapp1", title="old")
    action = only(plan([app("chat", folder="roleapp1", title="new")], [obj]))
    assert action.kind is ActionKind.ADOPT
    assert action.id == uid(5)
    assert action.reason == "folder roleapp1 exists unmanaged: adopting"
    assert [c.path for c in action.changes] == ["title"]
    assert action.patch == {"title": "new"}
    assert action.fingerprint == diffing.fingerprint(obj)


def test_adopt_without_changes_is_still_an_action() -> None:
    action = only(plan([app("chat", folder="roleapp1")], [live_obj(uid(5), "roleapp1")]))
    assert action.kind is ActionKind.ADOPT and action.changes == () and action.patch is None


def test_adoption_never_takes_an_object_another_manifest_pins() -> None:
    # "b" pins uid(5) by spec.id; "a" sorts first and has the same folder.
    result = plan(
        [app("a", folder="shared"), app("b", folder="shared", id=uid(5))],
        [live_obj(uid(5), "shared")],
    )
    assert kinds(result) == [("create", "a")]
    assert result.unchanged == 1
    assert result.guard_violations == ()


def test_adoption_never_takes_an_inventoried_object() -> None:
    result = plan(
        [app("a", folder="shared"), app("b", folder="shared")],
        [live_obj(uid(5), "shared")],
        [entry("b", uid(5))],
    )
    assert kinds(result) == [("create", "a")]


def test_another_manifests_create_id_is_claimed_though_it_resolved_elsewhere() -> None:
    # "b" resolves to its inventoried uid(1); its own create_id is live too (a create whose
    # answer was lost). Neither "a" (sorting first, same folder) adopts it nor is it unmanaged.
    b = app("b", folder="shared")
    result = plan(
        [app("a", folder="shared"), b],
        [live_obj(uid(1), "shared"), live_obj(b.create_id, "shared")],
        [entry("b", uid(1))],
    )
    assert kinds(result) == [("create", "a")]
    assert result.unmanaged == ()


def test_an_unclaimed_object_beside_claimed_ones_is_adopted_or_reported() -> None:
    result = plan(
        [app("a", folder="shared"), app("b", id=uid(5))],
        [live_obj(uid(3), "shared"), live_obj(uid(4), "other"), live_obj(uid(5), "b")],
        [entry("gone", uid(6))],
    )
    assert kinds(result) == [("adopt", "a")]
    assert [m.id for m in result.managed] == [uid(3), uid(5)]
    assert result.unmanaged == (Unmanaged(CONN, uid(4), ""),)
    assert result.forget == (Ref("RoleApp", CONN, "gone"),)


def test_two_manifests_claiming_one_live_id_is_a_violation() -> None:
    result = plan(
        [app("a", id=uid(5)), app("b", folder="x")],
        [live_obj(uid(5), "a")],
        [entry("b", uid(5))],
    )
    assert [v.guard for v in result.guard_violations] == ["conflict"]


# --- archives ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hasha", "expected"),
    [
        (f"md5;{MD5.upper()}", None),
        (f"MD5;{MD5}", None),
        ("md5;00000000000000000000000000000000", "archive md5 differs"),
        (None, "live object has no archive"),
        (f"sha1;{MD5}", "live object has no archive"),
    ],
)
def test_archive_compared_case_insensitively(hasha: str | None, expected: str | None) -> None:
    desired = app("a", id=uid(1), archive="/m/apps/a.zip")
    result = plan([desired], [live_obj(uid(1), "a", hasha=hasha)], archives={"a": MD5.upper()})
    if expected is None:
        assert result.actions == () and result.unchanged == 1
    else:
        action = only(result)
        assert action.kind is ActionKind.ARCHIVE and action.reason == expected
        assert action.archive is not None
        assert (action.archive.path, action.archive.md5) == ("/m/apps/a.zip", MD5)
        assert action.changes[0].after == f"md5;{MD5}"


def test_create_with_an_archive_uploads_it_after_creating() -> None:
    result = plan([app("a", archive="/m/a.zip")], archives={"RoleApp/era-main/a": MD5})
    assert kinds(result) == [("create", "a"), ("archive", "a")]
    assert result.fingerprints == {"RoleApp/era-main/a": None}


def test_update_and_archive_share_the_fingerprint() -> None:
    obj = live_obj(uid(1), "a", title="old")
    result = plan([app("a", id=uid(1), title="new", archive="/a.zip")], [obj], archives={"a": MD5})
    assert kinds(result) == [("update", "a"), ("archive", "a")]
    assert {a.fingerprint for a in result.actions} == {diffing.fingerprint(obj)}


def test_a_declared_archive_without_its_md5_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="no MD5"):
        plan([app("a", archive="/a.zip")])


# --- pruning and guards ----------------------------------------------------------------------


def test_inventoried_object_without_manifest_is_deleted() -> None:
    obj = live_obj(uid(9), "old")
    action = only(plan([], [obj], [entry("old", uid(9))]))
    assert action.kind is ActionKind.DELETE
    assert action.reason == "manifest removed: pruning"
    assert action.fingerprint == diffing.fingerprint(obj)
    assert action.source is None


def test_prune_false_deletes_nothing() -> None:
    result = plan([], [live_obj(uid(9), "old")], [entry("old", uid(9))], prune=False)
    assert result.actions == () and result.unmanaged == ()


def test_objects_never_managed_are_reported_not_deleted() -> None:
    result = plan([], [live_obj(uid(2), "theirs", title="Someone's app")])
    assert result.actions == ()
    assert result.unmanaged == (Unmanaged(CONN, uid(2), "Someone's app"),)


def test_inventoried_object_already_gone_is_forgotten() -> None:
    result = plan([], [], [entry("old", uid(9))])
    assert result.actions == ()
    assert result.forget == (Ref("RoleApp", CONN, "old"),)


def test_renamed_with_spec_id_moves_the_record_instead_of_deleting() -> None:
    result = plan(
        [app("new", folder="f", id=uid(9))], [live_obj(uid(9), "f")], [entry("old", uid(9))]
    )
    assert result.actions == ()
    assert result.forget == (Ref("RoleApp", CONN, "old"),)
    assert [str(m.ref) for m in result.managed] == ["RoleApp/era-main/new"]


def test_prevent_destroy_delete_is_a_guard_violation() -> None:
    result = plan([], [live_obj(uid(9), "old")], [entry("old", uid(9), prevent_destroy=True)])
    assert kinds(result) == [("delete", "old")]
    (violation,) = result.guard_violations
    assert violation.guard == "preventDestroy"
    assert violation.ref == Ref("RoleApp", CONN, "old")
    assert "preventDestroy: false" in violation.message


def test_prevent_destroy_with_prune_off_is_no_violation() -> None:
    inventory = [entry("old", uid(9), prevent_destroy=True)]
    result = plan([], [live_obj(uid(9), "old")], inventory, prune=False)
    assert result.guard_violations == ()


def test_managed_records_the_manifests_current_prevent_destroy() -> None:
    result = plan([app("a", id=uid(1), prevent_destroy=True)], [live_obj(uid(1), "a")])
    assert result.managed[0].prevent_destroy is True


# --- backups -------------------------------------------------------------------------------


def policy(name: str, **overrides: Any) -> BackupPolicy:
    fields: dict[str, Any] = {
        "name": name,
        "connection": "element-main",
        "source": ElementApplicationSource(application_id="3fa85f64-5717-4562-b3fc-2c963f66afa6"),
        "source_location": SourceLocation("backups.yaml", 4),
        "max_age": 26 * 3600.0,
    }
    fields.update(overrides)
    return BackupPolicy(**fields)


def success(id: str, hours_ago: float) -> LiveBackup:
    made = NOW - timedelta(hours=hours_ago)
    return LiveBackup(id=id, state=BackupState.SUCCEEDED, created=made, finished=made)


def test_due_policy_gets_a_backup_action_with_its_reason() -> None:
    result = plan(policies=[policy("crm")], backups={"crm": [success("b1", 27)]})
    action = only(result)
    assert action.kind is ActionKind.BACKUP
    assert action.ref == Ref("BackupPolicy", "element-main", "crm")
    assert action.reason == "newest success 27h ago exceeds maxAge 26h"
    assert action.source == "backups.yaml:4"


def test_fresh_running_or_suspended_policies_get_no_backup() -> None:
    running = LiveBackup(id="r", state=BackupState.RUNNING, created=NOW, finished=None)
    result = plan(
        policies=[policy("fresh"), policy("busy"), policy("off", suspend=True)],
        backups={"fresh": [success("b", 1)], "busy": [running], "off": []},
    )
    assert result.actions == ()
    assert result.unchanged == 3


def test_retention_gives_one_expire_per_owned_backup() -> None:
    backups = [success("b1", 1), success("b2", 30), success("b3", 60), success("foreign", 90)]
    result = plan(
        policies=[policy("crm", retention=Retention(keep_last=1))],
        backups={"crm": backups},
        owned_backups={"crm": {"b1", "b2", "b3"}},
    )
    assert [(a.kind.value, a.backup_id) for a in result.actions] == [
        ("expire", "b2"),
        ("expire", "b3"),
    ]


# --- order ---------------------------------------------------------------------------------


def test_order_is_deterministic_with_deletes_last_in_reverse() -> None:
    roleapps = [app("zeta", title="t"), app("alpha", title="t"), app("mid", id=uid(1), title="n")]
    live = [
        live_obj(uid(1), "mid", title="o"),
        live_obj(uid(8), "gone-a"),
        live_obj(uid(9), "gone-b"),
    ]
    inventory = [entry("gone-b", uid(9)), entry("gone-a", uid(8))]
    policies = [policy("crm")]
    result = plan(roleapps, live, inventory, policies=policies, backups={"crm": []})
    assert kinds(result) == [
        ("create", "alpha"),
        ("update", "mid"),
        ("create", "zeta"),
        ("backup", "crm"),
        ("delete", "gone-b"),
        ("delete", "gone-a"),
    ]
    again = plan(
        list(reversed(roleapps)),
        list(reversed(live)),
        list(reversed(inventory)),
        policies=policies,
        backups={"crm": []},
    )
    assert again == result


def test_created_is_whole_seconds_and_summary_counts_everything() -> None:
    result = plan([app("a")], policies=[policy("crm")], backups={"crm": [success("b", 1)]})
    assert result.created == NOW.replace(microsecond=0)
    assert result.summary == {
        "create": 1,
        "update": 0,
        "delete": 0,
        "adopt": 0,
        "archive": 0,
        "backup": 0,
        "expire": 0,
        "unchanged": 1,
    }
