"""Applier's threads: each connection's objects run at its concurrency, side by side.

Fakes stand in for the clients and the store, so the test counts what runs at once
without a network.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller import applying, archives
from controller.errors import StateError
from controller.manifests import Kind
from controller.plans import Action, ActionKind, ArchiveUpload, Managed, Plan, Ref
from controller.state.store import InventoryEntry

CONCURRENCY = {"era-a": 2, "era-b": 3}


class _Era:
    def __init__(self, name: str, clients: _Clients) -> None:
        self.name = name
        self.clients = clients

    def create(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        with self.clients.lock:
            self.clients.calls += 1
            self.clients.running[self.name] += 1
            self.clients.peak[self.name] = max(
                self.clients.peak[self.name], self.clients.running[self.name]
            )
            self.clients.overlap |= {n for n, k in self.clients.running.items() if k} == {
                "era-a",
                "era-b",
            }
        time.sleep(0.01)
        with self.clients.lock:
            self.clients.running[self.name] -= 1
        return dict(entity)


class _Clients:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.overlap = False
        self.calls = 0  # creates sent

    def concurrency(self, name: str) -> int:
        return CONCURRENCY[name]

    def era(self, name: str) -> _Era:
        return _Era(name, self)


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[InventoryEntry] = []

    def upsert_inventory(self, entries: Iterable[InventoryEntry]) -> None:
        with self.lock:
            self.entries.extend(entries)

    def remove_inventory(self, kind: str, connection: str, name: str) -> bool:
        return False


def _create(connection: str, n: int) -> Action:
    ref = Ref(Kind.ROLEAPP, connection, f"app-{n:03d}")
    return Action(
        kind=ActionKind.CREATE, ref=ref, reason="new", id=f"id-{connection}-{n}", desired={}
    )


def _plan(actions: tuple[Action, ...]) -> Plan:
    """A plan of these actions, each object managed under its action's id."""
    return Plan(
        created=datetime.now(UTC),
        actions=actions,
        managed=tuple(Managed(ref=a.ref, id=a.id or "") for a in actions),
    )


def test_each_connection_runs_at_its_own_concurrency_and_all_are_recorded():
    actions = tuple(_create(c, n) for c in CONCURRENCY for n in range(12))
    plan = _plan(actions)
    clients, store = _Clients(), _Store()
    applier = applying.Applier(
        clients=clients,  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        policies={},
    )
    report = applier.apply(plan)
    assert [r.action for r in report.results] == list(actions)  # plan order
    assert report.count(applying.Outcome.SUCCEEDED) == len(actions)
    assert clients.peak == Counter(CONCURRENCY)
    assert clients.overlap  # the two connections' objects ran side by side
    # Each create is recorded on its own, as it happens, and not once more at the end.
    assert sorted(e.name for e in store.entries) == sorted(a.ref.name for a in actions)


def test_an_error_in_one_chain_is_raised_after_every_other_chain_ran():
    # A progress line that cannot be written (stdout closed) must not strand the other
    # objects half way: they all run and are recorded, then the error comes out.
    actions = tuple(_create("era-a", n) for n in range(6))
    plan = _plan(actions)

    def progress(progress: applying.Progress) -> None:
        if progress.result is not None and progress.action is actions[2]:
            raise BrokenPipeError("stdout closed")

    store = _Store()
    applier = applying.Applier(
        clients=_Clients(),  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        policies={},
        on_progress=progress,
    )
    with pytest.raises(BrokenPipeError, match="stdout closed"):
        applier.apply(plan)
    assert sorted(e.name for e in store.entries) == sorted(a.ref.name for a in actions)


class _RefusingStore(_Store):
    """Refuses to record one name: the database is fine for every other entry."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = refuse

    def upsert_inventory(self, entries: Iterable[InventoryEntry]) -> None:
        batch = list(entries)
        if any(e.name == self.refuse for e in batch):
            raise StateError(f"state store: cannot record {self.refuse}")
        super().upsert_inventory(batch)


def test_a_create_the_state_cannot_record_is_reported_failed_and_alone():
    actions = tuple(_create("era-a", n) for n in range(6))
    plan = _plan(actions)
    finished: list[tuple[str, str]] = []
    store = _RefusingStore("app-002")

    def progress(progress: applying.Progress) -> None:
        if progress.result is not None:
            recorded = any(e.name == progress.action.ref.name for e in store.entries)
            finished.append((progress.action.ref.name, progress.result.outcome.value))
            # Commit before report: a success is never shown before its record exists.
            assert recorded or progress.result.outcome is not applying.Outcome.SUCCEEDED

    report = applying.Applier(
        clients=_Clients(),  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        policies={},
        on_progress=progress,
    ).apply(plan)

    outcomes = {r.action.ref.name: (r.outcome, r.message) for r in report.results}
    assert outcomes.pop("app-002") == (
        applying.Outcome.FAILED,
        "state store: cannot record app-002",
    )
    assert {o for o, _ in outcomes.values()} == {applying.Outcome.SUCCEEDED}
    assert sorted(name for name, _ in finished) == sorted(a.ref.name for a in actions)
    assert report.exit_code == 5


def test_an_archive_waits_for_its_create_to_be_recorded_and_is_skipped_if_it_is_not(
    tmp_path: Path,
) -> None:
    # [create, archive]: the create is recorded before the upload (not handed to the group
    # commit), so a record that fails stops the object there, as any failed action does.
    zipped = tmp_path / "site.zip"
    zipped.write_bytes(b"PK\x05\x06" + bytes(18))
    create = _create("era-a", 1)
    upload = Action(
        kind=ActionKind.ARCHIVE,
        ref=create.ref,
        reason="archive changed",
        id=create.id,
        archive=ArchiveUpload(path=str(zipped), md5=archives.md5_hex(zipped.read_bytes())),
    )
    plan = Plan(
        created=datetime.now(UTC),
        actions=(create, upload),
        managed=(Managed(ref=create.ref, id=create.id or ""),),
    )
    report = applying.Applier(
        clients=_Clients(),  # type: ignore[arg-type]
        store=_RefusingStore(create.ref.name),  # type: ignore[arg-type]
        policies={},
    ).apply(plan)
    assert [(r.action.kind, r.outcome) for r in report.results] == [
        (ActionKind.CREATE, applying.Outcome.FAILED),
        (ActionKind.ARCHIVE, applying.Outcome.SKIPPED),
    ]


class _Interrupted(BaseException):
    """Stands in for KeyboardInterrupt, which would end the whole pytest session if late."""


def test_an_interrupt_begins_no_other_object_and_waits_for_the_running_ones() -> None:
    # Ctrl-C while the main thread waits: the caller then releases the state lock and
    # closes the store, so no thread may still be creating objects, and every object that
    # was created must be recorded.
    # Concurrency 2, 10 ms each: 2 s of work in all, so that on a loaded machine the signal
    # still lands long before the last object (with 40 it sometimes came after: 1 in 4 runs
    # of the whole suite beside other jobs). Only the objects under way are ever run.
    actions = tuple(_create("era-a", n) for n in range(400))
    store, clients = _Store(), _Clients()
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    sent = threading.Event()

    def progress(progress: applying.Progress) -> None:
        if progress.result is not None and not sent.is_set():
            sent.set()
            signal.pthread_kill(main, signal.SIGUSR1)

    def interrupt(_signum: int, _frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with pytest.raises(_Interrupted):
            applying.Applier(
                clients=clients,  # type: ignore[arg-type]
                store=store,  # type: ignore[arg-type]
                policies={},
                on_progress=progress,
            ).apply(_plan(actions))
        assert [t.name for t in threading.enumerate() if t.name.startswith("apply ")] == []
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert 0 < clients.calls < len(actions)  # it stopped early
    assert len({e.name for e in store.entries}) == clients.calls  # every create recorded
