"""Executing a Plan: the calls that make live match the manifests, and their outcomes.

Called by orchestrating, with the state lock held. Why the shape:

1. Actions of one object run in order (create → archive; adopt → archive); objects are
   independent and run in parallel, each client bounding its own connection's
   concurrency. Deletes run last, after everything else succeeded or failed.
2. A failure never stops the others: each action becomes a result (succeeded, failed
   with the error's message, or skipped because an earlier action of the same object
   failed). A partial apply is a report, not an exception.
3. The state is written as soon as a fact is known — a created object's id right after
   the create (by ``group_commit``, several threads' in one transaction, before the
   object is reported), a backup's id right after the trigger and before waiting — so a
   crash loses nothing the next run needs.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from controller import apply_threads, archives, durations
from controller.clients.backups import BackupState, LiveBackup
from controller.clients.era import EraClient, RoleappWrite
from controller.clients.http import FirstAttempt
from controller.connecting import Clients
from controller.errors import ConvergeError
from controller.group_commit import GroupCommit
from controller.manifests import BackupPolicy, Kind
from controller.plans import Action, ActionKind, Plan, Ref
from controller.state.store import BackupRecord, InventoryEntry, Store

FIRST_POLL_INTERVAL = 0.2  # seconds before the first re-poll of a running backup
POLL_INTERVAL = 1.0  # seconds between polls of a running backup; the servers are slow anyway
MAX_WORKERS = 64  # most threads for one connection's objects, or for all the backups


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class ActionResult(msgspec.Struct, frozen=True, kw_only=True):
    action: Action
    outcome: Outcome
    message: str = ""  # the error for failures; what happened for successes (a backup id)
    seconds: float = 0.0


class ApplyReport(msgspec.Struct, frozen=True, kw_only=True):
    results: tuple[ActionResult, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def failed(self) -> bool:
        return any(r.outcome is not Outcome.SUCCEEDED for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 all done; 5 some failed and some succeeded; 1 nothing could be applied."""
        if not self.failed:
            return 0
        return 5 if self.count(Outcome.SUCCEEDED) else 1


class Progress(msgspec.Struct, frozen=True):
    """What a progress display needs: an action starting (result None) or finishing."""

    action: Action
    result: ActionResult | None
    done: int
    total: int


class ApplySettings(msgspec.Struct, frozen=True, kw_only=True):
    wait_for_backups: bool = True  # False: --no-wait, trigger and return
    poll_interval: float = POLL_INTERVAL


_DEFAULT_SETTINGS = ApplySettings()  # frozen: one serves every Applier given none


class _Failed(ConvergeError):
    """An action's failure, with the message the report shows."""


class Applier:
    def __init__(
        self,
        *,
        clients: Clients,
        store: Store,
        policies: Mapping[Ref, BackupPolicy],
        settings: ApplySettings = _DEFAULT_SETTINGS,
        on_progress: Callable[[Progress], None] = lambda _p: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clients = clients
        self.store = store
        self.policies = policies
        self.settings = settings
        self.on_progress = on_progress
        self.now = now
        self.sleep = sleep
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._prevent_destroy: Mapping[Ref, bool] = {}
        self._group: GroupCommit | None = None  # while chains run: records their objects
        # id(action) → its first attempt, made at once, for a thread to go on from.
        self._firsts: dict[int, FirstAttempt] = {}

    def apply(self, plan: Plan) -> ApplyReport:
        self._total = len(plan.actions)
        self._prevent_destroy = {m.ref: m.prevent_destroy for m in plan.managed}
        chains, deletes = _chains(plan.actions)
        results = self._run_chains(chains)
        if deletes:
            results.extend(self._run_chains([[a] for a in deletes]))
        self._record_unchanged(plan, results)
        order = {id(a): i for i, a in enumerate(plan.actions)}
        results.sort(key=lambda r: order[id(r.action)])
        return ApplyReport(results=tuple(results))

    def _run_chains(self, chains: Sequence[Sequence[Action]]) -> list[ActionResult]:
        """Run independent chains: each connection's lone writes at once, beside the rest.

        Why a writer: a roleapp's lone create, update or delete is one call that is safe to
        repeat, so one thread per connection sends them all, many at a time, instead of a
        thread per call blocking on each (``EraClient.write_many``); whatever it cannot
        make plainly it hands back. Threads per connection run everything else — chains of
        several actions (create, then archive), backups — from the start, and the writes
        handed back once the writer ends, with the clients' retries, logins and error
        messages (``apply_threads.Taker``). While both run, the connection's concurrency
        is shared between them (``_share``).

        Why threads per connection, sized to its concurrency: a roleapp chain waits on
        nothing but its connection's client, which lets ``concurrency`` requests through at
        a time; more threads only queue on its semaphore. Connections run side by side. A
        backup chain mostly sleeps between polls, so backups keep one thread each; either
        way at most MAX_WORKERS per group, beside its writer. Threads take the next chain
        themselves (no executor: its future and hand-over per chain cost ~30 µs of CPU
        each). As with an executor, every chain runs even if one raises (a bug, or a
        progress line that cannot be written), and the first such error in plan order is
        raised once all have finished.
        """
        groups: dict[str | None, list[int]] = {}
        for index, chain in enumerate(chains):
            ref = chain[0].ref
            groups.setdefault(
                None if ref.kind == Kind.BACKUP_POLICY else ref.connection, []
            ).append(index)
        outcomes: list[list[ActionResult] | BaseException] = [[] for _ in chains]
        faults: list[BaseException] = []  # what broke a writer: raised once all have run
        jobs: list[tuple[apply_threads.Taker, apply_threads.Job, str]] = []
        for connection, indexes in groups.items():
            name, era = connection or "backups", None
            writes: dict[int, RoleappWrite] = {}  # each lone write, built once
            if connection is not None:
                for i in indexes:
                    if (write := _write_of(chains[i])) is not None:
                        writes[i] = write
                era = self.clients.era(connection) if writes else None
            bound = MAX_WORKERS if connection is None else self.clients.concurrency(connection)
            others = [i for i in indexes if i not in writes]
            # One request at a time and other chains too: a writer would hold that one
            # slot for its whole run, and the chains would wait for it.
            if era is not None and era.can_write_many and (bound > 1 or not others):
                take = apply_threads.Taker(others, writes)
                most = bound - _share(len(others), bound, len(indexes))
                writer = self._writer(era, chains, writes, outcomes, faults, most=most)
                jobs.append((take, writer, name))
            else:
                take = apply_threads.Taker(indexes)
            work = self._worker(chains, outcomes)
            threads = max(1, min(bound, MAX_WORKERS, len(indexes)))
            jobs.extend((take, work, name) for _ in range(threads))
        self._group = GroupCommit(self.store.upsert_inventory)
        try:
            apply_threads.run_in_threads(jobs)
        finally:
            self._group.close()  # the last records committed and reported
        results: list[ActionResult] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.extend(outcome)
        if faults:
            raise faults[0]
        return results

    def _worker(
        self,
        chains: Sequence[Sequence[Action]],
        outcomes: list[list[ActionResult] | BaseException],
    ) -> apply_threads.Job:
        def work(take: apply_threads.Taker) -> None:
            while (index := take()) is not None:
                try:
                    outcomes[index] = self._run_chain(chains[index])
                except BaseException as exc:  # re-raised by _run_chains, after the others ran
                    outcomes[index] = exc

        return work

    def _writer(
        self,
        era: EraClient,
        chains: Sequence[Sequence[Action]],
        lone: Mapping[int, RoleappWrite],
        outcomes: list[list[ActionResult] | BaseException],
        faults: list[BaseException],
        *,
        most: int,
    ) -> apply_threads.Job:
        """One connection's lone writes, sent at once; each one done recorded and reported."""

        def write(take: apply_threads.Taker) -> None:
            started: dict[int, float] = {}  # the writes sent and not yet done or left

            def writes() -> Iterator[tuple[int, RoleappWrite]]:
                while (index := take.take_write()) is not None:
                    action = chains[index][0]
                    try:
                        self.on_progress(Progress(action, None, self._done, self._total))
                    except BaseException as exc:  # re-raised by _run_chains, as a worker's
                        outcomes[index] = exc
                        continue
                    started[index] = time.monotonic()
                    yield index, lone[index]  # the taker holds only lone writes

            def done(index: int) -> None:
                seconds = time.monotonic() - started.pop(index)
                try:
                    outcomes[index] = self._written(chains[index][0], seconds)
                except BaseException as exc:  # as a worker's
                    outcomes[index] = exc

            def left(index: int, first: FirstAttempt) -> None:
                # Made by a thread from this attempt on (see _first), once the writer ends.
                started.pop(index)
                self._firsts[id(chains[index][0])] = first
                take.hand_back(index)

            try:
                era.write_many(writes(), done, left, most=most)
            except BaseException as exc:
                faults.append(exc)  # a bug: raised once every chain has run
            finally:
                # Taken and neither done nor left: never sent (a header that cannot go),
                # or unknown after a bug. The threads make them from the start: a lone
                # write is safe to repeat, and the threads' request says what stops it.
                for index in started:
                    take.hand_back(index)
                take.writer_ended()

        return write

    def _written(self, action: Action, seconds: float) -> list[ActionResult]:
        """A write ``write_many`` made: recorded and reported as ``_run_chain`` would."""
        result = ActionResult(
            action=action, outcome=Outcome.SUCCEEDED, message=_done(action), seconds=seconds
        )
        if action.kind in _RECORDED:
            results = [result]
            assert self._group is not None  # set while chains run
            self._group.submit(self._inventory_entry(action), self._reporter(results, 0))
            return results
        if action.kind is ActionKind.DELETE:
            try:
                self.store.remove_inventory(action.ref.kind, action.ref.connection, action.ref.name)
            except Exception as exc:
                result = _failed(action, exc, seconds=seconds)
        self._report(result)
        return [result]

    # -- one object's actions, in order ---------------------------------------------------

    def _run_chain(self, chain: Sequence[Action]) -> list[ActionResult]:
        results: list[ActionResult] = []
        failed = False
        for position, action in enumerate(chain):
            if failed:
                result = ActionResult(
                    action=action,
                    outcome=Outcome.SKIPPED,
                    message="skipped: an earlier action of this object failed",
                )
            else:
                self.on_progress(Progress(action, None, self._done, self._total))
                result = self._run(action)
                if result.outcome is Outcome.SUCCEEDED and action.kind in _RECORDED:
                    entry = self._inventory_entry(action)
                    if position == len(chain) - 1:
                        # The object's last action: it is reported once its record is
                        # committed (by the group commit), and this thread goes on meanwhile.
                        assert self._group is not None  # set while chains run
                        results.append(result)
                        self._group.submit(entry, self._reporter(results, len(results) - 1))
                        continue
                    result = self._record_now(entry, result)
                failed = result.outcome is not Outcome.SUCCEEDED
            self._report(result)
            results.append(result)
        return results

    def _run(self, action: Action) -> ActionResult:
        started = time.monotonic()
        try:
            message = _HANDLERS[action.kind](self, action)
        except Exception as exc:  # a bug too must not take the other actions down with it
            return _failed(action, exc, seconds=time.monotonic() - started)
        return ActionResult(
            action=action,
            outcome=Outcome.SUCCEEDED,
            message=message,
            seconds=time.monotonic() - started,
        )

    def _report(self, result: ActionResult) -> None:
        with self._lock:
            self._done += 1
            done = self._done
        self.on_progress(Progress(result.action, result, done, self._total))

    # -- the inventory: what a create or adopt made ours ----------------------------------

    def _inventory_entry(self, action: Action) -> InventoryEntry:
        assert action.id is not None
        return InventoryEntry(
            kind=action.ref.kind,
            connection=action.ref.connection,
            name=action.ref.name,
            id=action.id,
            prevent_destroy=self._prevent_destroy.get(action.ref, False),
            applied_at=self.now(),
        )

    def _record_now(self, entry: InventoryEntry, result: ActionResult) -> ActionResult:
        """Commit before the object's next action, which is skipped if this fails."""
        try:
            self.store.upsert_inventory([entry])
        except Exception as exc:
            return _failed(result.action, exc, seconds=result.seconds)
        return result

    def _reporter(
        self, results: list[ActionResult], index: int
    ) -> Callable[[Exception | None], None]:
        """What the group commit calls once ``results[index]``'s record is in (or is not)."""

        def report(error: Exception | None) -> None:
            result = results[index]
            if error is not None:
                # Created, but the state does not know it: the next plan finds it by its id.
                result = _failed(result.action, error, seconds=result.seconds)
                results[index] = result
            self._report(result)

        return report

    # -- roleapps -------------------------------------------------------------------------

    def _create(self, action: Action) -> str:
        assert action.desired is not None and action.id is not None
        self.clients.era(action.ref.connection).create(action.desired, first=self._first(action))
        return _done(action)  # recorded by _run_chain

    def _update(self, action: Action) -> str:
        assert action.id is not None
        if action.patch:
            era = self.clients.era(action.ref.connection)
            era.update(action.id, action.patch, first=self._first(action))
        return _done(action)

    def _adopt(self, action: Action) -> str:
        assert action.id is not None
        if action.patch:
            era = self.clients.era(action.ref.connection)
            era.update(action.id, action.patch, first=self._first(action))
        return _done(action)  # recorded by _run_chain

    def _first(self, action: Action) -> FirstAttempt | None:
        """The action's first attempt, if the writes made at once made it (and left it)."""
        return self._firsts.pop(id(action), None)

    def _archive(self, action: Action) -> str:
        assert action.archive is not None and action.id is not None
        data = archives.archive_bytes(action.archive.path)
        if archives.md5_hex(data) != action.archive.md5:
            raise _Failed(f"{action.archive.path} changed since the plan was made; plan again")
        self.clients.era(action.ref.connection).upload_archive(action.id, data)
        return f"uploaded {len(data)} bytes (md5 {action.archive.md5})"

    def _delete(self, action: Action) -> str:
        assert action.id is not None
        self.clients.era(action.ref.connection).delete(action.id, first=self._first(action))
        self.store.remove_inventory(action.ref.kind, action.ref.connection, action.ref.name)
        return _done(action)

    def _record_unchanged(self, plan: Plan, results: Sequence[ActionResult]) -> None:
        """Record every declared object whose actions all succeeded (or that had none).

        Why also the unchanged ones: a preventDestroy flipped in git changes no field, but
        the state must learn it, since the flag stays sticky after the manifest is gone.
        Those a create or adopt recorded a moment ago (a success of theirs means a committed
        record), with the same id and flag, are not written twice (a thousand creates: ~15 ms).
        """
        failed = {r.action.ref for r in results if r.outcome is not Outcome.SUCCEEDED}
        recorded = {
            (r.action.ref, r.action.id)
            for r in results
            if r.outcome is Outcome.SUCCEEDED and r.action.kind in _RECORDED
        }
        entries = [
            InventoryEntry(
                kind=m.ref.kind,
                connection=m.ref.connection,
                name=m.ref.name,
                id=m.id,
                prevent_destroy=m.prevent_destroy,
                applied_at=self.now(),
            )
            for m in plan.managed
            if m.ref not in failed and (m.ref, m.id) not in recorded
        ]
        if entries:
            self.store.upsert_inventory(entries)
        for ref in plan.forget:
            self.store.remove_inventory(ref.kind, ref.connection, ref.name)

    # -- backups --------------------------------------------------------------------------

    def _backup(self, action: Action) -> str:
        policy = self.policies[action.ref]
        api = self.clients.backups(policy.connection)
        started = self.now()
        handle = api.trigger(policy)
        # Recorded before waiting: a crash while waiting must not lose which backup is ours.
        self._record_backup(
            policy, handle, handle=handle, started=started, state=BackupState.RUNNING
        )
        if not self.settings.wait_for_backups or policy.wait <= 0:
            return f"triggered {handle} (not waiting)"
        final = self._follow(policy, handle, started=started)
        if final.id != handle:
            # The handle named the work (a vcda task), not the backup it made: close the
            # trigger's record too, or the state says "running" for ever.
            self._record_backup(
                policy, handle, handle=handle, started=started, state=final.state, live=final
            )
        self._record_backup(
            policy, final.id, handle=handle, started=started, state=final.state, live=final
        )
        if final.state is BackupState.FAILED:
            raise _Failed(
                f"backup {handle} on {policy.connection} failed: "
                f"{final.message or 'no message from the server'}"
            )
        if final.state is BackupState.RUNNING:
            raise _Failed(
                f"backup {handle} on {policy.connection} did not finish within wait "
                f"{durations.humanize(policy.wait)} (still running on the server)"
            )
        return f"backup {final.id} done"

    def _follow(self, policy: BackupPolicy, handle: str, *, started: datetime) -> LiveBackup:
        api = self.clients.backups(policy.connection)
        deadline = time.monotonic() + policy.wait
        # Start quick (a dump of a small application is done in a second), then back off
        # to poll_interval so a two-hour wait does not hammer the server.
        interval = min(FIRST_POLL_INTERVAL, self.settings.poll_interval)
        while True:
            live = api.poll(policy, handle)
            if live.state is not BackupState.RUNNING or time.monotonic() >= deadline:
                return live
            self.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 1.5, self.settings.poll_interval)

    def _expire(self, action: Action) -> str:
        policy = self.policies[action.ref]
        assert action.backup_id is not None
        self.clients.backups(policy.connection).delete(policy, action.backup_id)
        self._record_backup(
            policy, action.backup_id, handle=action.backup_id, started=None, state="expired"
        )
        return f"deleted backup {action.backup_id}"

    def _record_backup(
        self,
        policy: BackupPolicy,
        backup_id: str,
        *,
        handle: str,
        started: datetime | None,
        state: str,
        live: LiveBackup | None = None,
    ) -> None:
        existing = {
            r.backup_id: r
            for r in self.store.backups(policy=policy.name, connection=policy.connection)
        }
        previous = existing.get(backup_id)
        self.store.record_backup(
            BackupRecord(
                policy=policy.name,
                connection=policy.connection,
                backup_id=backup_id,
                handle=handle,
                started_at=started or (previous.started_at if previous else self.now()),
                state=str(state),
                finished_at=(live.finished if live else None)
                or (self.now() if state != BackupState.RUNNING else None),
                message=live.message if live else "",
            )
        )


# The actions after which the object is ours: its id goes into the inventory at once.
_RECORDED = frozenset({ActionKind.CREATE, ActionKind.ADOPT})
_DONE = {
    ActionKind.CREATE: "created",
    ActionKind.UPDATE: "updated",
    ActionKind.ADOPT: "adopted",
    ActionKind.DELETE: "deleted",
}


def _done(action: Action) -> str:
    """What a roleapp write that succeeded says, however it was made."""
    return f"{_DONE[action.kind]} {action.id}"


def _share(others: int, concurrency: int, chains: int) -> int:
    """The connection's requests in flight left to its threads while the writer writes.

    Why: the writer holds its slots for its whole run, so without a share the chains of
    several actions would wait for the last lone write; with one, both go on, in
    proportion to their numbers (at least one each, when there are both: with a
    concurrency of 1 and other chains, ``_run_chains`` has no writer).
    """
    if not others or concurrency < 2:
        return 0
    return min(concurrency - 1, max(1, math.ceil(concurrency * others / chains)))


def _write_of(chain: Sequence[Action]) -> RoleappWrite | None:
    """The one call a chain needs, when that is all it needs and it is safe to repeat."""
    if len(chain) != 1:
        return None
    action = chain[0]
    if action.id is None or action.ref.kind != Kind.ROLEAPP:
        return None
    if action.kind is ActionKind.CREATE:
        # Without its id in the body a create cannot be repeated safely (EraClient.create).
        if action.desired is None or action.desired.get("id") != action.id:
            return None
        return RoleappWrite.create(action.desired)
    if action.kind in (ActionKind.UPDATE, ActionKind.ADOPT) and action.patch:
        return RoleappWrite.update(action.id, action.patch)
    if action.kind is ActionKind.DELETE:
        return RoleappWrite.delete(action.id)
    return None


def _failed(action: Action, exc: Exception, *, seconds: float) -> ActionResult:
    message = (
        str(exc)
        if isinstance(exc, ConvergeError)
        else f"internal error: {type(exc).__name__}: {exc}"
    )
    return ActionResult(action=action, outcome=Outcome.FAILED, message=message, seconds=seconds)


_HANDLERS: dict[ActionKind, Callable[[Applier, Action], str]] = {
    ActionKind.CREATE: Applier._create,
    ActionKind.UPDATE: Applier._update,
    ActionKind.ADOPT: Applier._adopt,
    ActionKind.ARCHIVE: Applier._archive,
    ActionKind.DELETE: Applier._delete,
    ActionKind.BACKUP: Applier._backup,
    ActionKind.EXPIRE: Applier._expire,
}


def _chains(actions: Sequence[Action]) -> tuple[list[list[Action]], list[Action]]:
    """Actions grouped by object in plan order, and the deletes, which run last."""
    chains: dict[tuple[Ref, ActionKind | None, str | None], list[Action]] = {}
    deletes: list[Action] = []
    for action in actions:
        if action.kind is ActionKind.DELETE:
            deletes.append(action)
            continue
        # A roleapp's actions build on each other (create, then archive); a policy's
        # trigger and each of its expires do not.
        independent = action.ref.kind == Kind.BACKUP_POLICY
        key = (
            action.ref,
            action.kind if independent else None,
            action.backup_id if independent else None,
        )
        chains.setdefault(key, []).append(action)
    return list(chains.values()), deletes
