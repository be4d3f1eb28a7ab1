"""The one behaviour suite every state backend must pass (SQLite and PostgreSQL alike).

The ``backend``/``store`` fixtures in ``conftest.py`` run each test once per backend.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from controller import errors, redaction
from controller.state import store as records
from controller.state.store import BackupRecord, InventoryEntry, Store

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def entry(
    name: str, id_: str = "id-1", *, kind: str = "RoleApp", **extra: object
) -> InventoryEntry:
    fields: dict[str, object] = {
        "kind": kind,
        "connection": "era-main",
        "name": name,
        "id": id_,
        "applied_at": T0,
    }
    fields.update(extra)
    return InventoryEntry(**fields)  # type: ignore[arg-type]


# -- inventory ------------------------------------------------------------------------------


def test_inventory_starts_empty_and_round_trips(store: Store) -> None:
    assert store.inventory() == []
    a = entry("chat-operator", "id-a", prevent_destroy=True)
    b = entry("crm", "id-b", kind="BackupPolicy")
    store.upsert_inventory([a, b])
    assert store.inventory() == [b, a]  # sorted by kind, connection, name
    assert store.inventory("RoleApp") == [a]
    assert store.inventory("Nothing") == []


def test_upsert_replaces_id_prevent_destroy_and_applied_at(store: Store) -> None:
    store.upsert_inventory([entry("chat", "old", prevent_destroy=True)])
    later = T0 + timedelta(hours=1)
    store.upsert_inventory([entry("chat", "new", prevent_destroy=False, applied_at=later)])
    assert store.inventory() == [entry("chat", "new", prevent_destroy=False, applied_at=later)]


def test_remove_inventory_says_whether_it_removed(store: Store) -> None:
    store.upsert_inventory([entry("chat"), entry("other")])
    assert store.remove_inventory("RoleApp", "era-main", "chat") is True
    assert store.remove_inventory("RoleApp", "era-main", "chat") is False
    assert [e.name for e in store.inventory()] == ["other"]


def test_timestamps_come_back_in_utc(store: Store) -> None:
    moscow = timezone(timedelta(hours=3))
    store.upsert_inventory([entry("chat", applied_at=datetime(2026, 11, 23, 13, 0, 1, 5, moscow))])
    (got,) = store.inventory()
    assert got.applied_at == datetime(2026, 11, 23, 10, 0, 1, 5, UTC)
    assert got.applied_at.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.upsert_inventory([entry("chat", applied_at=datetime(2026, 1, 1))])


def test_data_survives_reopening(backend: Any, store: Store) -> None:
    store.upsert_inventory([entry("chat")])
    store.close()
    again = backend.open()
    try:
        assert again.inventory() == [entry("chat")]
    finally:
        again.close()


def test_concurrent_writes_from_threads(store: Store) -> None:
    def work(worker: int) -> None:
        for i in range(25):
            store.upsert_inventory([entry(f"w{worker}-{i}")])
            store.inventory("RoleApp")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(store.inventory()) == 150


def test_no_record_has_a_field_for_a_secret() -> None:
    for record in (
        records.InventoryEntry,
        records.BackupRecord,
        records.DriftRecord,
        records.RunRecord,
    ):
        for name in record.__struct_fields__:
            assert not redaction.is_secret_key(name), (record.__name__, name)


# -- the lock -------------------------------------------------------------------------------


def test_lock_is_exclusive_and_names_the_holder(backend: Any, store: Store) -> None:
    other = backend.open()
    try:
        with store.lock(holder="alice@ci pid 1", timeout=0):
            info = store.lock_info()
            assert info is not None and info[0] == "alice@ci pid 1"
            assert info[1].utcoffset() == timedelta(0)
            started = time.monotonic()
            with (
                pytest.raises(errors.LockHeldError) as caught,
                other.lock(holder="bob", timeout=0.3),
            ):
                pytest.fail("two holders at once")
            waited = time.monotonic() - started
        assert 0.3 <= waited < 3.0
        assert caught.value.holder == "alice@ci pid 1"
        assert "alice@ci pid 1" in str(caught.value)
        assert caught.value.exit_code == 4
        assert store.lock_info() is None
        with other.lock(holder="bob", timeout=0):  # released on exit
            assert other.lock_info() is not None
    finally:
        other.close()


def test_lock_is_released_when_the_body_raises(backend: Any, store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.lock(holder="alice", timeout=0):
        raise RuntimeError("boom")
    assert store.lock_info() is None
    other = backend.open()
    try:
        with other.lock(holder="bob", timeout=0):
            pass
    finally:
        other.close()


def test_force_unlock_frees_a_held_lock(backend: Any, store: Store) -> None:
    assert store.force_unlock() is False
    admin = backend.open()
    try:
        with store.lock(holder="stuck", timeout=0):
            assert admin.force_unlock() is True
            assert admin.lock_info() is None
            with admin.lock(holder="admin", timeout=5):
                assert admin.lock_info() is not None
        # The forced-out holder's exit must not remove the new holder's lock.
    finally:
        admin.close()


_HOLD_SCRIPT = """
import sys, time
from controller import state
store = state.open_store(sys.argv[1], schema=sys.argv[2] or None)
with store.lock(holder="doomed-apply", timeout=5):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_of_a_sigkilled_holder_is_released(backend: Any, store: Store) -> None:
    args = [sys.executable, "-c", _HOLD_SCRIPT, backend.url, backend.schema or ""]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as holder:
        try:
            ready, _, _ = select.select([holder.stdout], [], [], 30)
            assert ready and holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            with (
                pytest.raises(errors.LockHeldError, match="doomed-apply"),
                store.lock(holder="next", timeout=0),
            ):
                pass
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
    started = time.monotonic()
    with store.lock(holder="next", timeout=10):
        assert store.lock_info() is not None
    assert time.monotonic() - started < 10


# -- runs -----------------------------------------------------------------------------------


def test_runs_are_recorded_newest_first(store: Store) -> None:
    first = store.start_run(command="plan", started_at=T0)
    second = store.start_run(command="apply", started_at=T0 + timedelta(minutes=5))
    store.finish_run(
        second,
        outcome="partial",
        summary={"create": 2, "failed": 1},
        finished_at=T0 + timedelta(minutes=6),
    )
    newest, oldest = store.runs()
    assert newest.id == second and newest.command == "apply"
    assert newest.outcome == "partial" and dict(newest.summary) == {"create": 2, "failed": 1}
    assert newest.finished_at == T0 + timedelta(minutes=6)
    assert oldest.id == first and oldest.outcome is None and oldest.finished_at is None
    assert oldest.started_at == T0
    assert [r.id for r in store.runs(limit=1)] == [second]


def test_finishing_an_unknown_run_is_an_error(store: Store) -> None:
    with pytest.raises(errors.StateError, match="no run"):
        store.finish_run("nope", outcome="ok", summary={}, finished_at=T0)


# -- backups --------------------------------------------------------------------------------


def test_backups_upsert_by_policy_connection_and_id(store: Store) -> None:
    running = BackupRecord(
        policy="crm", connection="element-main", backup_id="b1", handle="task-1",
        started_at=T0, state="running",
    )  # fmt: skip
    store.record_backup(running)
    store.record_backup(
        msgspec.structs.replace(running, backup_id="b0", started_at=T0 - timedelta(days=1))
    )
    store.record_backup(msgspec.structs.replace(running, policy="other"))
    done = msgspec.structs.replace(
        running, state="failed", finished_at=T0 + timedelta(minutes=3), message="disk full"
    )
    store.record_backup(done)
    got = store.backups(policy="crm", connection="element-main")
    assert [b.backup_id for b in got] == ["b0", "b1"]
    assert got[1] == done
    assert store.backups(policy="crm", connection="elsewhere") == []


# -- drift ----------------------------------------------------------------------------------


def test_drift_opens_keeps_first_seen_closes_and_reopens(store: Store) -> None:
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    opened = store.update_drift(
        {"RoleApp/era-main/a": "title differs", "RoleApp/era-main/b": ""}, now=t1
    )
    assert set(opened) == {"RoleApp/era-main/a", "RoleApp/era-main/b"}
    assert opened["RoleApp/era-main/a"].first_seen == t1

    still = store.update_drift({"RoleApp/era-main/a": "title and roles differ"}, now=t2)
    assert list(still) == ["RoleApp/era-main/a"]
    a = still["RoleApp/era-main/a"]
    assert (a.first_seen, a.last_seen, a.detail) == (t1, t2, "title and roles differ")
    assert [d.key for d in store.drift()] == ["RoleApp/era-main/a"]
    closed = [d for d in store.drift(include_closed=True) if d.key == "RoleApp/era-main/b"]
    assert len(closed) == 1 and closed[0].closed_at == t2  # closed, not deleted

    again = store.update_drift({"RoleApp/era-main/b": "back"}, now=t3)
    assert again["RoleApp/era-main/b"].first_seen == t3  # a new episode
    assert [(d.key, d.closed_at) for d in store.drift(include_closed=True)] == [
        ("RoleApp/era-main/a", t3),
        ("RoleApp/era-main/b", t2),
        ("RoleApp/era-main/b", None),
    ]
    assert store.update_drift({}, now=t3) == {}
    assert store.drift() == []


# -- migrations -----------------------------------------------------------------------------


def test_a_newer_schema_version_is_refused(backend: Any, store: Store) -> None:
    store.close()
    backend.execute("UPDATE schema_version SET version = 999")
    with pytest.raises(errors.StateError, match="schema version 999, newer") as caught:
        backend.open()
    assert "upgrade converge" in str(caught.value)
