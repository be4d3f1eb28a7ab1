"""controller.drifting: statuses from the planner's identity rules, backup states, history, scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controller import drifting
from controller.clients.backups import BackupState, LiveBackup
from controller.drifting import DriftReport, ResourceStatus
from controller.manifests import (
    BackupPolicy,
    ElementApplicationSource,
    Lifecycle,
    RoleApp,
    SourceLocation,
)
from controller.plans import Ref
from controller.policies import PolicyState
from controller.state.store import DriftRecord, InventoryEntry

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
H = 3600


def roleapp(name: str, folder: str | None = None, **kwargs: Any) -> RoleApp:
    fields = kwargs.pop("fields", {})
    return RoleApp(
        name=name,
        connection=kwargs.pop("connection", "era-main"),
        fields={"folder": folder or name, **fields},
        source=SourceLocation("manifests/era.yaml", 3),
        lifecycle=kwargs.pop("lifecycle", Lifecycle()),
        **kwargs,
    )


def live(id: str, folder: str, **fields: Any) -> dict[str, Any]:
    return {"id": id, "folder": folder, **fields}


def entry(name: str, id: str, connection: str = "era-main") -> InventoryEntry:
    return InventoryEntry(
        kind="RoleApp", connection=connection, name=name, id=id, applied_at=NOW - timedelta(days=1)
    )


def policy(name: str, **overrides: Any) -> BackupPolicy:
    fields: dict[str, Any] = {
        "name": name,
        "connection": "element-main",
        "source": ElementApplicationSource(application_id="3fa85f64-5717-4562-b3fc-2c963f66afa6"),
        "source_location": SourceLocation("backups.yaml", 1),
        "max_age": 26 * H,
    }
    fields.update(overrides)
    return BackupPolicy(**fields)


def backup(id: str, age_hours: float, state: BackupState = BackupState.SUCCEEDED) -> LiveBackup:
    made = NOW - timedelta(hours=age_hours)
    return LiveBackup(
        id=id,
        state=state,
        created=made,
        finished=None if state is BackupState.RUNNING else made,
        message="disk full" if state is BackupState.FAILED else "",
    )


def report(**kwargs: Any) -> DriftReport:
    kwargs.setdefault("inventory", [])
    return drifting.build_report(now=NOW, **kwargs)


def by_name(result: DriftReport) -> dict[str | None, drifting.ResourceDrift]:
    return {r.name: r for r in result.resources if r.name is not None}


def test_in_sync_drifted_missing_and_unmanaged() -> None:
    result = report(
        roleapps=[
            roleapp("same", fields={"title": "Same"}),
            roleapp("changed", fields={"title": "Wanted", "roles": ["chatagent"]}),
            roleapp("gone"),
        ],
        live={
            "era-main": [
                live("id-same", "same", title="Same"),
                live("id-changed", "changed", title="Live", roles=["x"]),
                live("id-other", "someone", title="Someone's app"),
            ]
        },
        inventory=[entry("same", "id-same"), entry("changed", "id-changed")],
    )
    found = by_name(result)
    assert found["same"].status is ResourceStatus.IN_SYNC
    assert found["gone"].status is ResourceStatus.MISSING
    assert found["gone"].changes == ()
    changed = found["changed"]
    assert changed.status is ResourceStatus.DRIFTED
    assert changed.id == "id-changed"
    assert [(c.path, c.before, c.after) for c in changed.changes] == [
        ("roles", ["x"], ["chatagent"]),
        ("title", "Live", "Wanted"),
    ]
    unmanaged = [r for r in result.resources if r.status is ResourceStatus.UNMANAGED]
    assert [(u.name, u.id, u.title) for u in unmanaged] == [(None, "id-other", "Someone's app")]
    assert result.summary == {
        "in_sync": 1,
        "drifted": 1,
        "missing": 1,
        "unmanaged": 1,
        "compliant": 0,
        "overdue": 0,
        "running": 0,
        "failing": 0,
        "never": 0,
        "suspended": 0,
        "orphaned": 0,
    }
    assert not result.clean
    assert result.checked == NOW


def test_unmanaged_alone_is_not_drift() -> None:
    result = report(
        roleapps=[roleapp("same", fields={"title": "Same"})],
        live={"era-main": [live("a", "same", title="Same"), live("b", "other", title="Other")]},
        inventory=[entry("same", "a")],
    )
    assert result.summary["unmanaged"] == 1
    assert result.clean


def test_unmatched_folder_is_adoptable_in_sync_or_drifted() -> None:
    result = report(
        roleapps=[roleapp("a", fields={"title": "A"}), roleapp("b", fields={"title": "B"})],
        live={"era-main": [live("x", "a", title="A"), live("y", "b", title="old")]},
    )
    found = by_name(result)
    assert found["a"].status is ResourceStatus.IN_SYNC
    assert "not yet adopted" in found["a"].note
    assert found["b"].status is ResourceStatus.DRIFTED
    assert found["b"].id == "y"
    # Adopted candidates are claimed: not also unmanaged.
    assert result.summary["unmanaged"] == 0


def test_ignored_fields_are_not_drift() -> None:
    result = report(
        roleapps=[
            roleapp(
                "a",
                fields={"title": "A", "opts": {"comment": "x"}},
                lifecycle=Lifecycle(ignore_fields=("opts.comment",)),
            )
        ],
        live={"era-main": [live("x", "a", title="A", opts={"comment": "changed by hand"})]},
        inventory=[entry("a", "x")],
    )
    assert by_name(result)["a"].status is ResourceStatus.IN_SYNC


def test_orphaned_inventory_object_is_drift() -> None:
    result = report(
        roleapps=[],
        live={"era-main": [live("x", "old", title="Old")]},
        inventory=[entry("old", "x")],
    )
    (item,) = result.resources
    assert (item.name, item.status, item.id) == ("old", ResourceStatus.ORPHANED, "x")
    assert not result.clean


def test_sensitive_change_is_marked() -> None:
    result = report(
        roleapps=[roleapp("a", fields={"opts": {"password": "new-secret"}})],
        live={"era-main": [live("x", "a", opts={"password": "old-secret"})]},
        inventory=[entry("a", "x")],
    )
    (change,) = by_name(result)["a"].changes
    assert change.sensitive
    assert "secret" not in str(drifting.open_items(result))


def test_archive_md5_difference_is_drift() -> None:
    result = report(
        roleapps=[roleapp("a", archive="/tmp/a.zip")],
        live={"era-main": [live("x", "a", opts={"attachment_info": {"hasha": "md5;AAAA"}})]},
        inventory=[entry("a", "x")],
        archives={"RoleApp/era-main/a": "bbbb"},
    )
    (change,) = by_name(result)["a"].changes
    assert (change.path, change.before, change.after) == ("archive", "md5;aaaa", "md5;bbbb")


def test_backup_states() -> None:
    result = report(
        roleapps=[],
        live={},
        policies_declared=[
            policy("fresh"),
            policy("overdue"),
            policy("failing"),
            policy("never"),
            policy("running"),
            policy("suspended", suspend=True),
        ],
        backups={
            "fresh": [backup("f1", 2)],
            "overdue": [backup("o1", 30)],
            "failing": [backup("x1", 20), backup("x2", 1, BackupState.FAILED)],
            "running": [backup("r1", 30), backup("r2", 0.1, BackupState.RUNNING)],
            "suspended": [],
        },
    )
    states = {b.name: b for b in result.backups}
    assert {n: b.status for n, b in states.items()} == {
        "fresh": PolicyState.COMPLIANT,
        "overdue": PolicyState.OVERDUE,
        "failing": PolicyState.FAILING,
        "never": PolicyState.NEVER,
        "running": PolicyState.RUNNING,
        "suspended": PolicyState.SUSPENDED,
    }
    overdue = states["overdue"]
    assert overdue.last_success == NOW - timedelta(hours=30)
    assert overdue.age_seconds == 30 * H
    assert overdue.max_age_seconds == 26 * H
    assert states["failing"].message == "disk full"
    assert not result.clean
    failing = {k for k in drifting.open_items(result)}
    assert failing == {
        "BackupPolicy/element-main/overdue",
        "BackupPolicy/element-main/failing",
        "BackupPolicy/element-main/never",
    }


def test_running_and_suspended_are_not_failures() -> None:
    result = report(
        roleapps=[],
        live={},
        policies_declared=[policy("running"), policy("suspended", suspend=True)],
        backups={"running": [backup("r", 0.1, BackupState.RUNNING)]},
    )
    assert result.clean


def test_open_items_and_history() -> None:
    result = report(
        roleapps=[roleapp("changed", fields={"title": "Wanted"}), roleapp("gone")],
        live={"era-main": [live("id-changed", "changed", title="Live")]},
        inventory=[entry("changed", "id-changed")],
    )
    items = drifting.open_items(result)
    assert items == {
        "RoleApp/era-main/changed": "drifted: title",
        "RoleApp/era-main/gone": "missing",
    }
    first = NOW - timedelta(days=2)
    records = {
        "RoleApp/era-main/changed": DriftRecord(
            key="RoleApp/era-main/changed", first_seen=first, last_seen=NOW
        )
    }
    found = by_name(drifting.with_history(result, records))
    assert found["changed"].since == first
    assert found["gone"].since is None


def test_scoped_keeps_selected_and_drops_unmanaged() -> None:
    result = report(
        roleapps=[roleapp("a", fields={"title": "A"}), roleapp("b")],
        live={"era-main": [live("x", "a", title="A"), live("u", "other")]},
        inventory=[entry("a", "x")],
        policies_declared=[policy("p")],
    )

    def keep(ref: Ref) -> bool:
        return ref.name == "a"

    scoped = drifting.scoped(result, keep)
    assert [r.name for r in scoped.resources] == ["a"]
    assert scoped.backups == ()
    records = [
        DriftRecord(key="RoleApp/era-main/b", first_seen=NOW, last_seen=NOW, detail="missing"),
        DriftRecord(key="RoleApp/era-main/a", first_seen=NOW, last_seen=NOW, detail="drifted"),
    ]
    assert drifting.carried_over(records, keep) == {"RoleApp/era-main/b": "missing"}


def test_conflicting_manifests_are_reported() -> None:
    result = report(
        roleapps=[roleapp("a", id="same-id"), roleapp("b", id="same-id")],
        live={"era-main": [live("same-id", "a")]},
    )
    found = by_name(result)
    assert {found["a"].status, found["b"].status} == {
        ResourceStatus.IN_SYNC,
        ResourceStatus.DRIFTED,
    }
    assert "both claim" in found["b"].note
