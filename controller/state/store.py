"""The state store's protocol and the records it holds.

What converge remembers between runs: the inventory of objects it created or adopted (so
pruning deletes only what it owns), the state lock (one apply at a time per estate), the
history of runs, the backups it triggered (retention only expires those), and open drift
(so a report can say "drifting since"). ``controller.state.open_store`` returns a
:class:`Store`; ``sqlite.py`` and ``postgres.py`` implement it, and the planner, the
applier and the CLI only ever see this protocol and these records.

No record has a field for a secret, so none can be stored. Every timestamp crossing this
interface is timezone-aware; stores hand back UTC.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from controller import errors

__all__ = [
    "DEFAULT_SCHEMA",
    "LOCK_POLL_SECONDS",
    "BackupRecord",
    "DriftRecord",
    "InventoryEntry",
    "RunRecord",
    "Store",
    "format_since",
    "to_utc",
    "validate_schema_name",
    "wait_for_lock",
]

DEFAULT_SCHEMA = "public"

# How often a waiting lock() asks again. Short enough that `--lock-timeout 1s` feels exact,
# long enough that a few waiting CI jobs do not hammer the database.
LOCK_POLL_SECONDS = 0.1

# Lower case only: an unquoted name in psql folds to lower case, so `Prod` would be a trap.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class InventoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An object converge created or adopted: the only kind pruning may delete."""

    kind: str
    connection: str
    name: str
    id: str
    prevent_destroy: bool = False
    applied_at: datetime


class BackupRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A backup converge triggered for a policy; retention expires only these."""

    policy: str
    connection: str
    backup_id: str
    handle: str
    started_at: datetime
    state: str
    finished_at: datetime | None = None
    message: str = ""


class DriftRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One drifting object; ``closed_at`` is set once it stopped drifting."""

    key: str  # "RoleApp/era-main/chat-operator" or "BackupPolicy/element-main/crm"
    first_seen: datetime
    last_seen: datetime
    detail: str = ""
    closed_at: datetime | None = None


class RunRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One plan/apply/drift run; ``outcome`` and ``finished_at`` stay None while it runs."""

    id: str
    command: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None
    summary: Mapping[str, int] = msgspec.field(default_factory=dict)


class Store(Protocol):
    """What every state backend offers. Thread-safe: the applier calls it from workers."""

    url: str  # where the state lives, password masked: safe to print

    def inventory(self, kind: str | None = None) -> list[InventoryEntry]: ...

    def upsert_inventory(self, entries: Iterable[InventoryEntry]) -> None: ...

    def remove_inventory(self, kind: str, connection: str, name: str) -> bool: ...

    def lock(self, *, holder: str, timeout: float) -> AbstractContextManager[None]: ...

    def lock_info(self) -> tuple[str, datetime] | None: ...

    def force_unlock(self) -> bool: ...

    def start_run(self, *, command: str, started_at: datetime) -> str: ...

    def finish_run(
        self,
        run_id: str,
        *,
        outcome: str,
        summary: Mapping[str, int],
        finished_at: datetime,
    ) -> None: ...

    def runs(self, limit: int = 20) -> list[RunRecord]: ...

    def record_backup(self, record: BackupRecord) -> None: ...

    def backups(self, *, policy: str, connection: str) -> list[BackupRecord]: ...

    def update_drift(
        self, open_items: Mapping[str, str], *, now: datetime
    ) -> dict[str, DriftRecord]: ...

    def drift(self, *, include_closed: bool = False) -> list[DriftRecord]: ...

    def close(self) -> None: ...


def to_utc(moment: datetime, what: str) -> datetime:
    """``moment`` in UTC; a naive datetime is a programming error, so it raises ValueError."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def format_since(moment: datetime) -> str:
    """How a lock's start time is shown in ``LockHeldError``."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def validate_schema_name(name: str) -> str:
    """``name`` if it is usable as a PostgreSQL schema for ``--state-schema``; else StateError."""
    if not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
        raise errors.StateError(
            f"invalid state schema name {name!r}: use 1-63 lower-case letters, digits and "
            "underscores, starting with a letter or underscore (and not pg_)"
        )
    return name


def wait_for_lock(
    try_once: Callable[[], tuple[str, datetime] | None],
    *,
    timeout: float,
    sleep: Callable[[float], None],
) -> None:
    """Call ``try_once`` until it takes the lock (returns None) or ``timeout`` runs out.

    ``try_once`` returns the current holder and since when the lock is taken; the last one
    seen goes into the ``LockHeldError``. The loop is bounded twice over: by the monotonic
    deadline, and by a count of polls, so a fake ``sleep`` in tests cannot make it spin.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    polls_left = int(max(timeout, 0.0) / LOCK_POLL_SECONDS) + 1
    while True:
        held_by = try_once()
        if held_by is None:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0 or polls_left <= 0:
            raise errors.LockHeldError(held_by[0], format_since(held_by[1]))
        polls_left -= 1
        sleep(min(LOCK_POLL_SECONDS, remaining))
