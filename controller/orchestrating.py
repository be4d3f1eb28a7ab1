"""One run of plan, apply or drift: manifests, state, clients and live state, wired together.

Called by the CLI, which drives a ``Run`` step by step so that it can show the plan and
ask before applying. Everything here is I/O glue; the decisions live in planning,
policies and applying, which this module feeds.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from controller import (
    applying,
    archives,
    collecting,
    connecting,
    diffing,
    fetching,
    planning,
    policies,
    validating,
)
from controller.applying import ApplyReport, ApplySettings, Progress
from controller.clients.backups import BackupState
from controller.connecting import Clients
from controller.defaults import DEFAULT_STATE
from controller.errors import ApiError, ConvergeError, GuardError, StalePlanError
from controller.fetching import LiveState
from controller.manifests import Api, BackupPolicy, Kind, Manifests
from controller.plans import Action, ActionKind, ArchiveUpload, Plan, Ref
from controller.state import open_store
from controller.state.store import InventoryEntry, Store


class UsageError(ConvergeError):
    """A flag's value cannot be used."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """``--selector key=value`` and ``--target KIND/NAME``: which objects a run touches."""

    selectors: tuple[tuple[str, str], ...] = ()
    targets: tuple[tuple[str, ...], ...] = ()  # (kind, name) or (kind, connection, name)

    @classmethod
    def parse(cls, selectors: Iterable[str], targets: Iterable[str]) -> Scope:
        parsed_selectors = []
        for text in selectors:
            key, sep, value = text.partition("=")
            if not sep or not key:
                raise UsageError(f"--selector {text!r}: expected key=value")
            parsed_selectors.append((key.strip(), value.strip()))
        parsed_targets = []
        for text in targets:
            parts = tuple(text.split("/"))
            if len(parts) not in (2, 3) or parts[0] not in (Kind.ROLEAPP, Kind.BACKUP_POLICY):
                raise UsageError(
                    f"--target {text!r}: expected RoleApp/NAME, BackupPolicy/NAME or KIND/CONNECTION/NAME"
                )
            parsed_targets.append(parts)
        return cls(selectors=tuple(parsed_selectors), targets=tuple(parsed_targets))

    @property
    def everything(self) -> bool:
        return not self.selectors and not self.targets

    def includes(self, ref: Ref, labels: Mapping[str, str] | None = None) -> bool:
        if self.selectors and not all((labels or {}).get(k) == v for k, v in self.selectors):
            return False
        if self.targets:
            return any(_target_matches(t, ref) for t in self.targets)
        return True


def _target_matches(target: tuple[str, ...], ref: Ref) -> bool:
    if len(target) == 2:
        return (target[0], target[1]) == (ref.kind, ref.name)
    return target == (ref.kind, ref.connection, ref.name)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    paths: tuple[str, ...] = (".",)
    state_url: str = DEFAULT_STATE
    state_schema: str | None = None
    scope: Scope = Scope()
    lock_timeout: float = 0.0
    parallelism: int | None = None
    prune: bool = True
    freeze_loaded: bool = False  # the CLI's own process: see loading.load


def sandbox_dir(state_url: str) -> Path:
    """``.converge/sandbox/`` beside a SQLite state; under the working directory otherwise."""
    if state_url.startswith("sqlite:///"):
        return Path(state_url.removeprefix("sqlite:///")).expanduser().parent / "sandbox"
    return Path(".converge") / "sandbox"


class Run:
    """The resources of one command: close it (``with``) to log out and release the state."""

    def __init__(
        self, options: RunOptions, *, command: str, now: Callable[[], datetime] | None = None
    ) -> None:
        self.options = options
        self.command = command
        self.now = now or (lambda: datetime.now(UTC))
        self.run_id = uuid.uuid4().hex[:12]
        self.manifests = validating.validate(options.paths, freeze=options.freeze_loaded)
        self._stack = ExitStack()
        self._store: Store | None = None
        self._clients: Clients | None = None
        self._locked = False  # holding the state lock: this run may write what it learns

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.options.state_url, schema=self.options.state_schema)
            self._stack.callback(self._store.close)
        return self._store

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(
                self.manifests,
                sandbox_dir=sandbox_dir(self.options.state_url),
                run_id=self.run_id,
                parallelism=self.options.parallelism,
            )
            # Registered after the store: closed first, so logouts happen before the lock goes.
            self._stack.callback(self._clients.close)
        return self._clients

    def lock(self) -> None:
        """Hold the state lock until the run ends (LockHeldError after --lock-timeout)."""
        holder = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} ({self.command})"
        self._stack.enter_context(self.store.lock(holder=holder, timeout=self.options.lock_timeout))
        self._locked = True

    # -- reading --------------------------------------------------------------------------

    def era_connections(
        self, *, all_declared: bool = False, inventory: Sequence[InventoryEntry] | None = None
    ) -> list[str]:
        """Era connections to list: those with roleapps or inventory (or every one, for drift).

        ``inventory``: the whole inventory when the caller has read it already.
        """
        declared = [c.name for c in self.manifests.connections if c.api == Api.ERA]
        if all_declared:
            return declared
        entries = self.store.inventory(Kind.ROLEAPP.value) if inventory is None else inventory
        used = {r.connection for r in self.manifests.roleapps}
        used |= {e.connection for e in entries if e.kind == Kind.ROLEAPP.value}
        return [name for name in declared if name in used]

    def fetch(
        self, *, all_connections: bool = False, inventory: Sequence[InventoryEntry] | None = None
    ) -> LiveState:
        era = self.era_connections(all_declared=all_connections, inventory=inventory)
        connecting.require_secrets(
            self.manifests, connections=[*era, *(p.connection for p in self.manifests.policies)]
        )
        with self.building():  # 10,000 live objects decoded: kept to the end of the run
            return fetching.fetch(
                self.clients, era_connections=era, policies=self.manifests.policies
            )

    def building(self) -> AbstractContextManager[None]:
        """A burst that builds what the run keeps: see ``controller.collecting``."""
        return collecting.paused(freeze=self.options.freeze_loaded)

    def plan(self, live: LiveState | None = None) -> Plan:
        """Read live state and plan; scoped by --selector and --target."""
        with self.building():
            # One read of the inventory serves the listing and the planner: at 10,000 entries
            # a read costs ~35 ms of CPU (rows, datetimes, records).
            everything = self.store.inventory()
            live = live or self.fetch(inventory=everything)
            declared = {c.name for c in self.manifests.connections}
            inventory = [e for e in everything if e.connection in declared]
            owned = {p.name: self._owned_backups(p) for p in self.manifests.policies}
            plan = planning.build_plan(
                roleapps=self.manifests.roleapps,
                live=live.roleapps,
                inventory=inventory,
                policies=self.manifests.policies,
                backups=live.backups,
                owned_backups=owned,
                archives=self._archive_md5s(),
                prune=self.options.prune,
                now=self.now(),
            )
            return self._scoped(plan)

    def _owned_backups(self, policy: BackupPolicy) -> set[str]:
        """Ids of the backups ``policy`` made, as the state recorded them, for retention.

        Why the polls: a trigger not followed to its end (``--no-wait``, ``wait: 0s``, a
        wait that ran out) is recorded under its handle only, and for vcda the handle is a
        task whose backup has another id. Each such record is asked about once more here;
        what it made is written back when this run holds the lock (apply), so the next run
        need not ask again. A server that cannot answer now is asked next run.
        """
        records = self.store.backups(policy=policy.name, connection=policy.connection)
        owned = {r.backup_id for r in records}
        for record in records:
            if record.state != BackupState.RUNNING:
                continue
            try:
                live = self.clients.backups(policy.connection).poll(policy, record.handle)
            except ApiError:
                continue
            if live.state is BackupState.RUNNING:
                continue
            owned.add(live.id)
            if self._locked:
                ids = dict.fromkeys((record.backup_id, live.id))
                for backup_id in ids:
                    self.store.record_backup(
                        msgspec.structs.replace(
                            record,
                            backup_id=backup_id,
                            state=str(live.state),
                            finished_at=live.finished or self.now(),
                            message=live.message,
                        )
                    )
        return owned

    def _archive_md5s(self) -> dict[str, str]:
        return {
            f"{Kind.ROLEAPP}/{r.connection}/{r.name}": archives.md5_hex(
                archives.archive_bytes(r.archive)
            )
            for r in self.manifests.roleapps
            if r.archive
        }

    def _scoped(self, plan: Plan) -> Plan:
        scope = self.options.scope
        if scope.everything:
            return plan
        labels = {
            Ref(Kind.ROLEAPP, r.connection, r.name): r.labels for r in self.manifests.roleapps
        }
        labels |= {
            Ref(Kind.BACKUP_POLICY, p.connection, p.name): p.labels for p in self.manifests.policies
        }

        def keep(ref: Ref) -> bool:
            return scope.includes(ref, labels.get(ref))

        actions = tuple(a for a in plan.actions if keep(a.ref))
        return msgspec.structs.replace(
            plan,
            actions=actions,
            fingerprints={k: v for k, v in plan.fingerprints.items() if keep(Ref.parse(k))},
            managed=tuple(m for m in plan.managed if keep(m.ref)),
            forget=tuple(r for r in plan.forget if keep(r)),
            guard_violations=tuple(v for v in plan.guard_violations if keep(v.ref)),
        )

    # -- applying -------------------------------------------------------------------------

    def check_stale(self, plan: Plan) -> None:
        """Refuse a saved plan if any object it touches changed since it was made (exit 3)."""
        live = self.fetch()
        stale = stale_refs(plan, live, self.manifests, now=self.now())
        if stale:
            raise StalePlanError(stale)

    def apply(
        self,
        plan: Plan,
        *,
        settings: ApplySettings,
        on_progress: Callable[[Progress], None],
    ) -> ApplyReport:
        connecting.require_secrets(
            self.manifests,
            connections=sorted({a.ref.connection for a in plan.actions}),
            vcda_policies=[
                a.ref.name
                for a in plan.actions
                if a.kind is ActionKind.BACKUP
                and self.manifests.connection(a.ref.connection).api == Api.VCDA
            ],
        )
        policies_by_ref = {
            Ref(Kind.BACKUP_POLICY, p.connection, p.name): p for p in self.manifests.policies
        }
        started = self.now()
        run_id = self.store.start_run(command=self.command, started_at=started)
        applier = applying.Applier(
            clients=self.clients,
            store=self.store,
            policies=policies_by_ref,
            settings=settings,
            on_progress=on_progress,
            now=self.now,
        )
        report = applier.apply(plan)
        summary = {outcome.value: report.count(outcome) for outcome in applying.Outcome}
        outcome = (
            "succeeded" if not report.failed else ("partial" if report.exit_code == 5 else "failed")
        )
        self.store.finish_run(run_id, outcome=outcome, summary=summary, finished_at=self.now())
        return report


def check_guards(plan: Plan, *, max_deletes: int | None = None) -> None:
    """preventDestroy and the deletion budget: refuse the whole plan (exit 4)."""
    problems = [v.message for v in plan.guard_violations]
    deletes = plan.count(ActionKind.DELETE)
    if max_deletes is not None and deletes > max_deletes:
        problems.append(
            f"the plan deletes {deletes} objects, more than --max-deletes {max_deletes}; "
            f"check the plan, then re-run with --max-deletes {deletes} if it is intended"
        )
    if problems:
        raise GuardError("refused by a safety guard:\n  " + "\n  ".join(problems))


def stale_refs(plan: Plan, live: LiveState, manifests: Manifests, *, now: datetime) -> list[str]:
    """What changed since ``plan`` was made, as ``Ref (why)`` strings; empty if nothing."""
    by_id = {
        (connection, str(obj["id"]).lower()): obj
        for connection, objs in live.roleapps.items()
        for obj in objs
    }
    policies_by_ref = {Ref(Kind.BACKUP_POLICY, p.connection, p.name): p for p in manifests.policies}
    stale: list[str] = []
    for action in plan.actions:
        why = _staleness(action, by_id, live, policies_by_ref, now=now)
        if why:
            stale.append(f"{action.ref} ({why})")
    return sorted(set(stale))


def _staleness(
    action: Action,
    by_id: Mapping[tuple[str, str], Mapping[str, Any]],
    live: LiveState,
    policies_by_ref: Mapping[Ref, BackupPolicy],
    *,
    now: datetime,
) -> str | None:
    if action.ref.kind == Kind.ROLEAPP:
        # The archive reviewed is the one uploaded: checked here, before anything is
        # applied, rather than by the upload itself after its object was created.
        if action.archive is not None and _archive_changed(action.archive):
            return f"archive {action.archive.path} changed since the plan was made"
        obj = by_id.get((action.ref.connection, (action.id or "").lower()))
        if action.fingerprint is None:
            return (
                "now exists live" if obj is not None and action.kind is ActionKind.CREATE else None
            )
        if obj is None:
            return "no longer exists live"
        return "changed live" if diffing.fingerprint(obj) != action.fingerprint else None
    policy = policies_by_ref.get(action.ref)
    if policy is None:
        return "policy no longer declared"
    backups = live.backups.get(action.ref.name, [])
    if action.kind is ActionKind.BACKUP:
        status = policies.evaluate(policy, backups, now=now)
        return None if status.due and status.state != "running" else f"now {status.state}"
    if action.kind is ActionKind.EXPIRE:
        ids = {b.id for b in backups if b.state is BackupState.SUCCEEDED}
        return None if action.backup_id in ids else "backup no longer exists"
    return None


def _archive_changed(upload: ArchiveUpload) -> bool:
    try:
        return archives.md5_hex(archives.archive_bytes(upload.path)) != upload.md5
    except archives.ArchiveError:
        return True
