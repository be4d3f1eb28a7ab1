"""Drift: one report on how far live state is from git, for roleapps and backup policies.

Called by the CLI (``converge drift``). :func:`build_report` is pure: manifests, live state,
the inventory and ``now`` in, a :class:`DriftReport` out. It asks the planner rather than
re-deciding identity: ``planning.build_plan`` already knows which live object each manifest
means, so an ``update`` or ``adopt`` action carries the drifted fields, a ``create`` means
the object is missing, a ``delete`` means an object converge manages lost its manifest,
and ``Plan.unmanaged`` lists what converge never touched. Backup policies are judged by
``policies.evaluate``. Renderers (``controller.rendering.drift``) turn the report into text.

:func:`check` at the end is the only I/O here: it reads live state through a ``Run``
(never writing to any API), keeps the drift history in the state and records the run.

Decisions (cli.md leaves them to us):
- ``unmanaged`` objects are reported, not drift: converge never manages them, so they
  cannot be out of line with git. They do not change the exit code.
- ``orphaned`` (an addition to cli.md's four statuses): an object converge manages whose
  manifest is gone, so the next ``apply`` deletes it. Live differs from git: drift.
- A declared object matched by folder but not yet adopted is ``in_sync`` when its fields
  match (with a note), ``drifted`` when they do not.
- Backup ``running`` and ``suspended`` are not failures; ``overdue``, ``failing`` and
  ``never`` are.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from controller import planning, policies
from controller.errors import ConvergeError
from controller.manifests import BackupPolicy, Kind, RoleApp
from controller.plans import ActionKind, FieldChange, Plan, Ref
from controller.policies import PolicyState

if TYPE_CHECKING:
    from controller.clients.backups import LiveBackup
    from controller.orchestrating import Run
    from controller.state.store import DriftRecord, InventoryEntry

DRIFT_FORMAT = "converge.drift/v1"


class ResourceStatus(enum.StrEnum):
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    MISSING = "missing"  # declared, not live
    UNMANAGED = "unmanaged"  # live, never managed by converge
    ORPHANED = "orphaned"  # managed by converge, manifest gone: apply would delete it


# The order of ``DriftReport.summary``: cli.md's ten counts, then our additions.
SUMMARY_KEYS = ("in_sync", "drifted", "missing", "unmanaged", *PolicyState, "orphaned")
FAILING_RESOURCES = frozenset(
    {ResourceStatus.DRIFTED, ResourceStatus.MISSING, ResourceStatus.ORPHANED}
)
NON_COMPLIANT = frozenset({PolicyState.OVERDUE, PolicyState.FAILING, PolicyState.NEVER})


class ResourceDrift(msgspec.Struct, frozen=True, kw_only=True):
    """One roleapp's standing. ``changes`` reuse FieldChange: ``before`` is live, ``after`` desired."""

    kind: str
    connection: str
    name: str | None  # None for unmanaged objects: git has no name for them
    id: str | None  # the live id; for a missing object, the id it would be created with
    status: ResourceStatus
    changes: tuple[FieldChange, ...] = ()
    title: str | None = None  # unmanaged: the live title, so a person can tell what it is
    source: str | None = None  # manifests/era.yaml:12
    note: str = ""
    since: datetime | None = None  # first seen drifting (from the state's history)

    @property
    def key(self) -> str | None:
        """The drift-history key; None for unmanaged objects, which are not drift."""
        return None if self.name is None else f"{self.kind}/{self.connection}/{self.name}"

    @property
    def failing(self) -> bool:
        return self.status in FAILING_RESOURCES


class BackupDrift(msgspec.Struct, frozen=True, kw_only=True):
    """One backup policy's state, as ``policies.evaluate`` judged it."""

    name: str
    connection: str
    status: PolicyState
    reason: str
    last_success: datetime | None
    age_seconds: float | None
    max_age_seconds: float | None
    message: str | None = None  # the server's words for the newest failure
    source: str | None = None
    since: datetime | None = None

    @property
    def key(self) -> str:
        return f"{Kind.BACKUP_POLICY}/{self.connection}/{self.name}"

    @property
    def failing(self) -> bool:
        return self.status in NON_COMPLIANT


class DriftReport(msgspec.Struct, frozen=True, kw_only=True):
    checked: datetime
    resources: tuple[ResourceDrift, ...] = ()
    backups: tuple[BackupDrift, ...] = ()
    format: str = DRIFT_FORMAT

    @property
    def summary(self) -> dict[str, int]:
        """Every status's count, zeros included, in ``SUMMARY_KEYS`` order."""
        counts = dict.fromkeys(SUMMARY_KEYS, 0)
        items: tuple[ResourceDrift | BackupDrift, ...] = (*self.resources, *self.backups)
        for item in items:
            counts[item.status.value] += 1
        return counts

    @property
    def clean(self) -> bool:
        """True when nothing drifted and every policy is compliant (or running, suspended)."""
        return not any(r.failing for r in self.resources) and not any(
            b.failing for b in self.backups
        )


def build_report(
    *,
    roleapps: Sequence[RoleApp],
    live: Mapping[str, Sequence[Mapping[str, Any]]],
    inventory: Sequence[InventoryEntry],
    policies_declared: Sequence[BackupPolicy] = (),
    backups: Mapping[str, Sequence[LiveBackup]] | None = None,
    archives: Mapping[str, str] | None = None,
    now: datetime,
) -> DriftReport:
    """The drift report for ``roleapps`` and ``policies_declared`` against live state.

    Arguments mean what they mean to ``planning.build_plan``; ``live`` should hold every
    era connection (not only those with manifests), so unmanaged objects are all found.
    """
    plan = planning.build_plan(
        roleapps=roleapps, live=live, inventory=inventory, archives=archives, prune=True, now=now
    )
    resources = [*_declared(roleapps, plan), *_orphaned(plan), *_unmanaged(plan)]
    evaluated = [
        _backup(policy, (backups or {}).get(policy.name, ()), now=now)
        for policy in policies_declared
    ]
    return DriftReport(
        checked=plan.created,
        resources=tuple(sorted(resources, key=_resource_order)),
        backups=tuple(sorted(evaluated, key=lambda b: (b.connection, b.name))),
    )


def _declared(roleapps: Sequence[RoleApp], plan: Plan) -> list[ResourceDrift]:
    ids = {m.ref: m.id for m in plan.managed}
    violations = {v.ref: v.message for v in plan.guard_violations}
    by_ref: dict[Ref, list[Any]] = {}
    for action in plan.actions:
        by_ref.setdefault(action.ref, []).append(action)
    found = []
    for roleapp in roleapps:
        ref = Ref(Kind.ROLEAPP.value, roleapp.connection, roleapp.name)
        kinds = {a.kind for a in by_ref.get(ref, ())}
        changes = tuple(
            sorted(
                (
                    c
                    for a in by_ref.get(ref, ())
                    if a.kind is not ActionKind.CREATE
                    for c in a.changes
                ),
                key=lambda c: c.path,
            )
        )
        note = ""
        if ref in violations:
            # Two manifests claim one live object: the planner resolved neither twice.
            status, changes, note = ResourceStatus.DRIFTED, (), violations[ref]
        elif ActionKind.CREATE in kinds:
            status, changes = ResourceStatus.MISSING, ()
        elif changes:
            status = ResourceStatus.DRIFTED
        else:
            status = ResourceStatus.IN_SYNC
        if ActionKind.ADOPT in kinds:
            note = f"not yet adopted: matched by folder {roleapp.folder}"
        found.append(
            ResourceDrift(
                kind=ref.kind,
                connection=ref.connection,
                name=ref.name,
                id=ids.get(ref) or roleapp.id,
                status=status,
                changes=changes,
                source=str(roleapp.source),
                note=note,
            )
        )
    return found


def _orphaned(plan: Plan) -> list[ResourceDrift]:
    return [
        ResourceDrift(
            kind=a.ref.kind,
            connection=a.ref.connection,
            name=a.ref.name,
            id=a.id,
            status=ResourceStatus.ORPHANED,
            note="managed by converge, manifest removed: apply would delete it",
        )
        for a in plan.actions
        if a.kind is ActionKind.DELETE
    ]


def _unmanaged(plan: Plan) -> list[ResourceDrift]:
    return [
        ResourceDrift(
            kind=Kind.ROLEAPP.value,
            connection=u.connection,
            name=None,
            id=u.id,
            status=ResourceStatus.UNMANAGED,
            title=u.title,
        )
        for u in plan.unmanaged
    ]


def _backup(policy: BackupPolicy, live: Sequence[LiveBackup], *, now: datetime) -> BackupDrift:
    status = policies.evaluate(policy, live, now=now)
    return BackupDrift(
        name=policy.name,
        connection=policy.connection,
        status=status.state,
        reason=status.reason,
        last_success=status.last_success,
        age_seconds=status.age_seconds,
        max_age_seconds=status.max_age_seconds,
        message=status.newest_failure_message,
        source=str(policy.source_location),
    )


def _resource_order(item: ResourceDrift) -> tuple[str, str, bool, str, str]:
    # Declared objects by name first, unmanaged ones (no name) after them, by id.
    return (item.kind, item.connection, item.name is None, item.name or "", item.id or "")


# -- history and scope (pure) ---------------------------------------------------------------


def open_items(report: DriftReport) -> dict[str, str]:
    """History key → a short detail for every finding, for ``Store.update_drift``.

    The detail names paths and states only, never values: the state must hold no secret.
    """
    items: dict[str, str] = {}
    for resource in report.resources:
        if resource.failing and resource.key is not None:
            paths = ", ".join(c.path for c in resource.changes)
            items[resource.key] = f"{resource.status}: {paths}" if paths else str(resource.status)
    for backup in report.backups:
        if backup.failing:
            items[backup.key] = f"{backup.status}: {backup.reason}"[:500]
    return items


def with_history(report: DriftReport, records: Mapping[str, DriftRecord]) -> DriftReport:
    """``report`` with each finding's ``since`` taken from the open history records."""

    def since(key: str | None) -> datetime | None:
        record = records.get(key) if key is not None else None
        return record.first_seen if record is not None else None

    return msgspec.structs.replace(
        report,
        resources=tuple(
            msgspec.structs.replace(r, since=since(r.key)) if r.failing else r
            for r in report.resources
        ),
        backups=tuple(
            msgspec.structs.replace(b, since=since(b.key)) if b.failing else b
            for b in report.backups
        ),
    )


def scoped(report: DriftReport, keep: Callable[[Ref], bool]) -> DriftReport:
    """Only the objects ``keep`` selects (``--selector``, ``--target``).

    Unmanaged objects have no labels and no name to target, so a scoped report leaves them
    out; the whole-estate report lists them all.
    """
    return msgspec.structs.replace(
        report,
        resources=tuple(
            r
            for r in report.resources
            if r.name is not None and keep(Ref(r.kind, r.connection, r.name))
        ),
        backups=tuple(
            b for b in report.backups if keep(Ref(Kind.BACKUP_POLICY.value, b.connection, b.name))
        ),
    )


def carried_over(records: Sequence[DriftRecord], keep: Callable[[Ref], bool]) -> dict[str, str]:
    """Open history items outside a scoped run's reach: kept open, since it did not look."""
    return {r.key: r.detail for r in records if not keep(Ref.parse(r.key))}


# -- the one impure step ----------------------------------------------------------------------


def check(run: Run) -> DriftReport:
    """Read live state through ``run`` (every era connection), report, remember.

    Writes nothing to any API: fetching only reads. Writes to the state: the run record and
    the drift history. No state lock: a drift check must not fail because an apply holds
    it, and the history update is one transaction of its own.
    """
    from controller import archives as archiving  # only the glue reads archive files

    store = run.store
    run_id = store.start_run(command=run.command, started_at=run.now())
    try:
        live = run.fetch(all_connections=True)
        declared = {c.name for c in run.manifests.connections}
        report = build_report(
            roleapps=run.manifests.roleapps,
            live=live.roleapps,
            inventory=[e for e in store.inventory() if e.connection in declared],
            policies_declared=run.manifests.policies,
            backups=live.backups,
            archives={
                f"{Kind.ROLEAPP}/{r.connection}/{r.name}": archiving.md5_hex(
                    archiving.archive_bytes(r.archive)
                )
                for r in run.manifests.roleapps
                if r.archive
            },
            now=run.now(),
        )
        carried: dict[str, str] = {}
        scope = run.options.scope
        if not scope.everything:
            labels = {
                Ref(Kind.ROLEAPP.value, r.connection, r.name): r.labels
                for r in run.manifests.roleapps
            }
            labels |= {
                Ref(Kind.BACKUP_POLICY.value, p.connection, p.name): p.labels
                for p in run.manifests.policies
            }

            def keep(ref: Ref) -> bool:
                return scope.includes(ref, labels.get(ref))

            report = scoped(report, keep)
            carried = carried_over(store.drift(), keep)
        records = store.update_drift({**carried, **open_items(report)}, now=report.checked)
        report = with_history(report, records)
    except BaseException:
        # Recorded as failed, but the original error is the one the user needs to see.
        with contextlib.suppress(ConvergeError):
            store.finish_run(run_id, outcome="failed", summary={}, finished_at=run.now())
        raise
    outcome = "in_sync" if report.clean else "drift"
    store.finish_run(run_id, outcome=outcome, summary=report.summary, finished_at=run.now())
    return report
