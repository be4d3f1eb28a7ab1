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
from controller.clients import http, wire
from controller.clients.era import EraClient
from controller.errors import StateError
from controller.manifests import Kind
from controller.plans import Action, ActionKind, ArchiveUpload, Managed, Plan, Ref
from controller.state.store import InventoryEntry
from tests.clients.rawserver import answer, serve

__all__ = ["serve"]  # a fixture, used by name

CONCURRENCY = {"era-a": 2, "era-b": 3}


class _Era:
    def __init__(self, name: str, clients: _Clients) -> None:
        self.name = name
        self.clients = clients

    can_write_many = False  # every chain goes to the threads

    def create(self, entity: Mapping[str, Any], *, first: Any = None) -> dict[str, Any]:
        assert first is None
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


def _apply_interrupted(clients: Any, store: _Store, actions: tuple[Action, ...]) -> None:
    """Apply ``actions``, with Ctrl-C (as SIGUSR1) in the main thread at the first result."""
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
            applying.Applier(clients=clients, store=store, policies={}, on_progress=progress).apply(
                _plan(actions)
            )
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_an_interrupt_begins_no_other_object_and_waits_for_the_running_ones() -> None:
    # Ctrl-C while the main thread waits: the caller then releases the state lock and
    # closes the store, so no thread may still be creating objects, and every object that
    # was created must be recorded.
    # Concurrency 2, 10 ms each: 2 s of work in all, so that on a loaded machine the signal
    # still lands long before the last object (with 40 it sometimes came after: 1 in 4 runs
    # of the whole suite beside other jobs). Only the objects under way are ever run.
    actions = tuple(_create("era-a", n) for n in range(400))
    store, clients = _Store(), _Clients()
    _apply_interrupted(clients, store, actions)
    assert [t.name for t in threading.enumerate() if t.name.startswith("apply ")] == []
    assert 0 < clients.calls < len(actions)  # it stopped early
    assert len({e.name for e in store.entries}) == clients.calls  # every create recorded


# -- lone writes, made at once by one thread per connection --------------------------------


class _WritingEra:
    """An Era client that makes lone writes at once: even ``n`` done, odd ones handed back."""

    can_write_many = True

    def __init__(self, *, pause: float = 0.0, broken: bool = False) -> None:
        self.pause = pause
        self.broken = broken
        self.writer: threading.Thread | None = None
        self.creators: set[threading.Thread] = set()
        self.at_once: list[str] = []  # ids written by write_many, in order
        self.finished: list[tuple[str, Any]] = []  # (id, first) by create
        self.written_before: dict[str, int] = {}  # id made by create → len(at_once) then
        self.lock = threading.Lock()

    def write_many(self, writes: Any, done: Any, left: Any, *, most: int) -> None:
        self.writer = threading.current_thread()
        self.most = most
        for key, write in writes:
            body = write.call.json
            time.sleep(self.pause)
            self.at_once.append(body["id"])
            if self.broken and len(self.at_once) == 3:
                raise RuntimeError("a bug in the writer")
            if body["n"] % 2:
                left(key, http.FirstAttempt(wire.cannot_connect("ConnectError", "x"), 0))
            else:
                done(key)

    def create(self, entity: Mapping[str, Any], *, first: Any = None) -> dict[str, Any]:
        with self.lock:
            self.creators.add(threading.current_thread())
            self.finished.append((entity["id"], first))
            self.written_before[entity["id"]] = len(self.at_once)
        return dict(entity)


class _WritingClients:
    def __init__(self, era: _WritingEra, concurrency: int = 4) -> None:
        self._era = era
        self._concurrency = concurrency

    def concurrency(self, name: str) -> int:
        return self._concurrency

    def era(self, name: str) -> _WritingEra:
        return self._era


def _lone_create(n: int) -> Action:
    ref = Ref(Kind.ROLEAPP, "era-a", f"app-{n:03d}")
    rid = f"id-{n}"
    return Action(
        kind=ActionKind.CREATE, ref=ref, reason="new", id=rid, desired={"id": rid, "n": n}
    )


def test_lone_writes_go_at_once_and_what_is_handed_back_is_finished_from_its_attempt():
    actions = tuple(_lone_create(n) for n in range(10))
    era, store = _WritingEra(), _Store()
    report = applying.Applier(
        clients=_WritingClients(era),  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        policies={},
    ).apply(_plan(actions))
    assert [r.action for r in report.results] == list(actions)  # plan order
    assert report.count(applying.Outcome.SUCCEEDED) == 10
    assert [r.message for r in report.results] == [f"created id-{n}" for n in range(10)]
    assert era.at_once == [f"id-{n}" for n in range(10)]
    # The odd ones were handed back, and made by the threads from that first attempt.
    assert sorted(rid for rid, _ in era.finished) == [f"id-{n}" for n in range(1, 10, 2)]
    assert all(isinstance(first, http.FirstAttempt) for _, first in era.finished)
    assert sorted(e.name for e in store.entries) == sorted(a.ref.name for a in actions)
    # One thread of the connection's wrote at once; its other threads finished the rest.
    assert era.writer is not None and era.writer.name == "apply era-a"
    assert era.creators and era.writer not in era.creators
    assert {t.name for t in era.creators} == {"apply era-a"}
    # A handed-back write is made only once the writer has ended.
    assert set(era.written_before.values()) == {10}
    assert era.most == 4  # nothing else to make: all the connection's concurrency


def test_chains_that_are_not_lone_writes_run_beside_the_writer():
    # A create without its id in the body is not safe to repeat, so not written at once:
    # the connection's threads make it while the writer is still writing.
    lone = [_lone_create(n * 2) for n in range(20)]  # even: all done at once
    ref = Ref(Kind.ROLEAPP, "era-a", "app-unsafe")
    unsafe = Action(
        kind=ActionKind.CREATE, ref=ref, reason="new", id="id-u", desired={"id": "elsewhere"}
    )
    era, store = _WritingEra(pause=0.01), _Store()
    report = applying.Applier(
        clients=_WritingClients(era),  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        policies={},
    ).apply(_plan((*lone, unsafe)))
    assert report.count(applying.Outcome.SUCCEEDED) == 21
    assert [rid for rid, _ in era.finished] == ["elsewhere"]
    assert era.written_before["elsewhere"] < len(lone)  # made while writes were still going
    assert era.most == 3  # one of the connection's 4 requests in flight left to the threads


def test_one_request_at_a_time_and_other_chains_means_no_writer():
    # The writer would hold the one slot for all its writes, the other chains waiting.
    ref = Ref(Kind.ROLEAPP, "era-a", "app-unsafe")
    unsafe = Action(
        kind=ActionKind.CREATE, ref=ref, reason="new", id="id-u", desired={"id": "elsewhere"}
    )
    era = _WritingEra()
    report = applying.Applier(
        clients=_WritingClients(era, concurrency=1),  # type: ignore[arg-type]
        store=_Store(),  # type: ignore[arg-type]
        policies={},
    ).apply(_plan((_lone_create(0), unsafe)))
    assert report.count(applying.Outcome.SUCCEEDED) == 2
    assert era.writer is None and era.at_once == []
    assert sorted(rid for rid, _ in era.finished) == ["elsewhere", "id-0"]


@pytest.mark.parametrize(
    ("others", "concurrency", "chains", "share"),
    [
        (0, 16, 1000, 0),  # lone writes only: the writer takes all
        (1, 16, 1000, 1),  # at least one for the other chains
        (500, 16, 1000, 8),  # in proportion
        (999, 16, 1000, 15),  # and at least one for the writer
        (5, 1, 10, 0),  # one request at a time: the writer holds it, the others wait
    ],
)
def test_the_threads_get_a_share_of_the_concurrency_while_the_writer_writes(
    others, concurrency, chains, share
):
    assert applying._share(others, concurrency, chains) == share


def test_no_connection_gets_more_threads_than_max_workers(monkeypatch):
    monkeypatch.setattr(applying, "MAX_WORKERS", 1)
    actions = tuple(_create(c, n) for c in CONCURRENCY for n in range(6))
    clients = _Clients()
    report = applying.Applier(
        clients=clients,  # type: ignore[arg-type]
        store=_Store(),  # type: ignore[arg-type]
        policies={},
    ).apply(_plan(actions))
    assert report.count(applying.Outcome.SUCCEEDED) == len(actions)
    assert clients.peak == Counter({"era-a": 1, "era-b": 1})


def test_a_writer_that_breaks_leaves_its_writes_to_the_threads_then_says_so():
    actions = tuple(_lone_create(n) for n in range(8))
    era, store = _WritingEra(broken=True), _Store()
    with pytest.raises(RuntimeError, match="a bug in the writer"):
        applying.Applier(
            clients=_WritingClients(era),  # type: ignore[arg-type]
            store=store,  # type: ignore[arg-type]
            policies={},
        ).apply(_plan(actions))
    # One was done at once and one handed back; the threads made all the rest.
    assert len(era.finished) == 7
    assert sorted(e.name for e in store.entries) == sorted(a.ref.name for a in actions)


def test_an_interrupt_while_writing_at_once_sends_no_more_and_records_what_was_done():
    actions = tuple(_lone_create(n) for n in range(400))
    era, store = _WritingEra(pause=0.005), _Store()
    _apply_interrupted(_WritingClients(era), store, actions)
    written = len(era.at_once)
    time.sleep(0.05)  # ten writes' time: none comes, the writer had ended
    assert len(era.at_once) == written
    assert 0 < written < len(actions)  # it stopped early
    assert era.finished == []  # the writes handed back are not made after an interrupt
    done = {f"app-{n:03d}" for rid in era.at_once if not (n := int(rid.split("-")[1])) % 2}
    assert done and {e.name for e in store.entries} == done  # every write done, recorded


def _roleapp_action(kind: ActionKind, n: int, **fields: Any) -> Action:
    ref = Ref(Kind.ROLEAPP, "era-a", f"app-{n:03d}")
    return Action(kind=kind, ref=ref, reason="test", id=f"id-{n}", **fields)


@pytest.mark.parametrize(
    ("chain", "call"),
    [
        ([_roleapp_action(ActionKind.CREATE, 1, desired={"id": "id-1"})], ("POST", None)),
        ([_roleapp_action(ActionKind.UPDATE, 1, patch={"title": "t"})], ("PATCH", "id-1")),
        ([_roleapp_action(ActionKind.ADOPT, 1, patch={"title": "t"})], ("PATCH", "id-1")),
        ([_roleapp_action(ActionKind.DELETE, 1)], ("DELETE", "id-1")),
        # Not lone writes, or not safe to repeat: the threads make them, one call each.
        ([_roleapp_action(ActionKind.CREATE, 1, desired={})], None),  # no id in the body
        ([_roleapp_action(ActionKind.CREATE, 1, desired={"id": "id-2"})], None),  # not its id
        ([_roleapp_action(ActionKind.UPDATE, 1)], None),  # nothing to patch
        ([_roleapp_action(ActionKind.ADOPT, 1)], None),  # adopted as it is: no call
        ([_roleapp_action(ActionKind.DELETE, 1), _roleapp_action(ActionKind.DELETE, 1)], None),
        ([Action(kind=ActionKind.DELETE, ref=Ref(Kind.ROLEAPP, "era-a", "x"), reason="")], None),
        (
            [
                Action(
                    kind=ActionKind.BACKUP,
                    ref=Ref(Kind.BACKUP_POLICY, "element", "nightly"),
                    reason="due",
                    id="p",
                )
            ],
            None,
        ),
    ],
)
def test_only_a_lone_write_safe_to_repeat_is_made_at_once(chain, call):
    write = applying._write_of(chain)
    if call is None:
        assert write is None
        return
    method, roleapp_id = call
    assert write is not None and write.call.method == method
    assert roleapp_id is None or write.call.path.endswith(f"/{roleapp_id}")


class _DoneEra(_WritingEra):
    """Makes every write at once."""

    def write_many(self, writes: Any, done: Any, left: Any, *, most: int) -> None:
        self.writer = threading.current_thread()
        for key, write in writes:
            self.at_once.append(f"{write.call.method} {write.call.path.rsplit('/', 1)[-1]}")
            done(key)


class _ForgetfulStore(_Store):
    """Cannot remove one entry from the inventory."""

    def remove_inventory(self, kind: str, connection: str, name: str) -> bool:
        if name == "app-003":
            raise StateError("state store: cannot forget app-003")
        return True


def test_updates_adopts_and_deletes_made_at_once_are_reported_and_recorded_as_threads_do():
    actions = (
        _roleapp_action(ActionKind.UPDATE, 1, patch={"title": "t"}),
        _roleapp_action(ActionKind.ADOPT, 2, patch={"title": "t"}),
        _roleapp_action(ActionKind.DELETE, 3),
        _roleapp_action(ActionKind.DELETE, 4),
    )
    era, store = _DoneEra(), _ForgetfulStore()
    shown: list[tuple[str, str]] = []

    def progress(progress: applying.Progress) -> None:
        if progress.result is not None:
            shown.append((progress.action.ref.name, progress.result.outcome.value))

    report = applying.Applier(
        clients=_WritingClients(era),  # type: ignore[arg-type]
        store=store,  # type: ignore[arg-type]
        policies={},
        on_progress=progress,
    ).apply(_plan(actions))
    assert sorted(era.at_once) == ["DELETE id-3", "DELETE id-4", "PATCH id-1", "PATCH id-2"]
    assert [(r.outcome.value, r.message) for r in report.results] == [
        ("succeeded", "updated id-1"),
        ("succeeded", "adopted id-2"),
        ("failed", "state store: cannot forget app-003"),  # deleted, but still inventoried
        ("succeeded", "deleted id-4"),
    ]
    assert sorted(shown) == sorted((r.action.ref.name, r.outcome.value) for r in report.results)
    # The adopted object joins the inventory (the updated one already is).
    assert "app-002" in {e.name for e in store.entries}


class _BadTokenLogin:
    """A login whose token holds a control character: no request can carry it."""

    def login(self, session: http.HttpSession) -> dict[str, str]:
        return {"Authorization": "Bearer bad\x01token"}

    def logout(self, session: http.HttpSession, headers: Any) -> None:
        pass

    def is_expired(self, response: http.HttpResponse) -> bool:
        return False


def test_a_write_that_cannot_be_sent_at_once_is_made_by_the_threads_and_fails_there(serve):
    # send_many passes over a call whose header cannot go; the write must still get its
    # result from the threads (their request says why), and never join the inventory.
    server = serve(lambda seen: answer(201, seen.body or b"{}"))
    settings = http.HttpSettings(base_url=server.url, connection="era-a", timeout=2.0)
    with http.HttpSession(
        settings, authenticator=_BadTokenLogin(), sleep=lambda s: None
    ) as session:
        era = EraClient(session)
        assert era.can_write_many
        actions = tuple(_lone_create(n) for n in range(3))
        store = _Store()
        report = applying.Applier(
            clients=_WritingClients(era),  # type: ignore[arg-type]
            store=store,  # type: ignore[arg-type]
            policies={},
        ).apply(_plan(actions))
    assert [r.action for r in report.results] == list(actions)
    assert {r.outcome for r in report.results} == {applying.Outcome.FAILED}
    assert all("bad\x01token" not in r.message for r in report.results)
    assert server.seen == []
    assert store.entries == []
