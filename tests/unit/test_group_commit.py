"""The group commit: nothing reported before its commit, failures per entry, nothing lost.

A fake ``write`` stands in for the store: it logs each batch, can be held to let entries
gather, and can refuse any batch holding a given name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from controller.group_commit import GroupCommit, Then
from controller.state.store import InventoryEntry

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def entry(name: str) -> InventoryEntry:
    return InventoryEntry(
        kind="RoleApp",
        connection="era-main",
        name=name,
        id=f"id-{name}",
        prevent_destroy=False,
        applied_at=NOW,
    )


class FakeStore:
    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.batches: list[list[str]] = []
        self.committed: set[str] = set()
        self.hold = threading.Event()
        self.hold.set()

    def write(self, entries: Sequence[InventoryEntry]) -> None:
        self.hold.wait(timeout=10)
        names = [e.name for e in entries]
        self.batches.append(names)
        if self.refuse in names:
            raise RuntimeError(f"cannot write {self.refuse}")
        self.committed.update(names)


class Reports:
    """Each ``then`` call, with whether the store had committed the entry by then."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.calls: dict[str, tuple[str | None, bool]] = {}

    def then(self, name: str) -> Then:
        def report(error: Exception | None) -> None:
            self.calls[name] = (None if error is None else str(error), name in self.store.committed)

        return report


def submit_while_the_first_commit_is_held(
    store: FakeStore, reports: Reports, names: list[str]
) -> None:
    """Submit ``names`` while the store holds its first write, so the rest gather; close."""
    store.hold.clear()
    group = GroupCommit(store.write)
    for name in names:
        group.submit(entry(name), reports.then(name))
    store.hold.set()
    group.close()


def test_entries_gather_into_few_transactions_and_are_reported_after_their_commit() -> None:
    store = FakeStore()
    reports = Reports(store)
    names = [f"app-{n}" for n in range(50)]
    submit_while_the_first_commit_is_held(store, reports, names)

    assert sorted(n for batch in store.batches for n in batch) == sorted(names)
    assert len(store.batches) < len(names) // 2
    assert reports.calls == {name: (None, True) for name in names}


def test_a_failed_batch_is_retried_entry_by_entry_and_only_the_culprit_fails() -> None:
    store = FakeStore(refuse="app-3")
    reports = Reports(store)
    names = [f"app-{n}" for n in range(8)]
    submit_while_the_first_commit_is_held(store, reports, names)

    assert reports.calls.pop("app-3") == ("cannot write app-3", False)
    assert reports.calls == {name: (None, True) for name in names if name != "app-3"}


def test_close_reports_everything_then_raises_the_first_error_of_a_report() -> None:
    store = FakeStore()
    seen: list[str] = []

    def then(name: str) -> Then:
        def report(_error: Exception | None) -> None:
            seen.append(name)
            if name == "app-1":
                raise BrokenPipeError("stdout closed")

        return report

    group = GroupCommit(store.write)
    for n in range(5):
        group.submit(entry(f"app-{n}"), then(f"app-{n}"))
    with pytest.raises(BrokenPipeError, match="stdout closed"):
        group.close()
    assert sorted(seen) == [f"app-{n}" for n in range(5)]
    assert store.committed == {f"app-{n}" for n in range(5)}


def test_an_entry_handed_over_after_close_is_committed_in_the_callers_thread() -> None:
    # Ctrl-C during an apply: close() runs while workers still finish their objects.
    store = FakeStore()
    reports = Reports(store)
    group = GroupCommit(store.write)
    group.close()
    group.submit(entry("late"), reports.then("late"))
    assert reports.calls == {"late": (None, True)}


def test_close_with_nothing_submitted_returns_at_once() -> None:
    store = FakeStore()
    group = GroupCommit(store.write)
    group.close()
    assert store.batches == []
