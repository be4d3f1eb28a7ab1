"""The Store operations both SQL backends share: the queries, and rows ↔ records.

``sqlite.py`` and ``postgres.py`` subclass :class:`SqlStore` and supply only what truly
differs between them: how to get a cursor (in a transaction or not), how a timestamp and a
JSON value are stored, and the state lock. Keeping one copy of every query here is what
makes "the same suite passes on both" likely rather than a coincidence.

Queries are written with ``%s`` placeholders (psycopg's); SQLite's subclass turns them into
``?``. Every query here is a literal, so no value ever becomes SQL text.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from controller import errors
from controller.state.store import (
    BackupRecord,
    DriftRecord,
    InventoryEntry,
    RunRecord,
    to_utc,
)

__all__ = ["SqlStore"]

_INVENTORY = "SELECT kind, connection, name, id, prevent_destroy, applied_at FROM inventory"
_UPSERT_INVENTORY = """
    INSERT INTO inventory (kind, connection, name, id, prevent_destroy, applied_at)
    VALUES (%s, %s, %s, %s, %s, %s)
    ON CONFLICT (kind, connection, name) DO UPDATE SET
      id = excluded.id, prevent_destroy = excluded.prevent_destroy,
      applied_at = excluded.applied_at"""
_UPSERT_BACKUP = """
    INSERT INTO backups (policy, connection, backup_id, handle, started_at, state,
                         finished_at, message)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (policy, connection, backup_id) DO UPDATE SET
      handle = excluded.handle, started_at = excluded.started_at, state = excluded.state,
      finished_at = excluded.finished_at, message = excluded.message"""


class SqlStore:
    """Everything of :class:`~controller.state.store.Store` but the lock and plumbing."""

    url: str  # masked

    # -- what a backend supplies ------------------------------------------------------------

    def _cursor(self, *, transaction: bool = False) -> contextlib.AbstractContextManager[Any]:
        """A DB-API cursor under the store's thread guard, driver errors → StateError."""
        raise NotImplementedError

    def _sql(self, query: str) -> str:
        return query

    def _time_in(self, moment: datetime) -> Any:
        return moment

    def _time_out(self, value: Any) -> datetime:
        raise NotImplementedError

    def _json_in(self, value: Mapping[str, int]) -> Any:
        raise NotImplementedError

    def _json_out(self, value: Any) -> dict[str, int]:
        raise NotImplementedError

    def _serialize(self, cur: Any, purpose: str) -> None:
        """Make concurrent ``purpose`` transactions take turns (SQLite's writers already do)."""

    # -- helpers ----------------------------------------------------------------------------

    def _stamp(self, moment: datetime, what: str) -> Any:
        return self._time_in(to_utc(moment, what))

    def _maybe_time(self, value: Any) -> datetime | None:
        return None if value is None else self._time_out(value)

    @contextlib.contextmanager
    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> Iterator[list[Any]]:
        with self._cursor() as cur:
            cur.execute(self._sql(query), params)
            yield cur.fetchall()

    # -- inventory --------------------------------------------------------------------------

    def inventory(self, kind: str | None = None) -> list[InventoryEntry]:
        where, params = (" WHERE kind = %s", (kind,)) if kind is not None else ("", ())
        with self._rows(_INVENTORY + where + " ORDER BY kind, connection, name", params) as rows:
            return [
                InventoryEntry(
                    kind=kind_,
                    connection=connection,
                    name=name,
                    id=id_,
                    prevent_destroy=bool(protected),
                    applied_at=self._time_out(applied),
                )
                for kind_, connection, name, id_, protected, applied in rows
            ]

    def upsert_inventory(self, entries: Iterable[InventoryEntry]) -> None:
        rows = [
            (
                e.kind,
                e.connection,
                e.name,
                e.id,
                e.prevent_destroy,
                self._stamp(e.applied_at, "applied_at"),
            )
            for e in entries
        ]
        if rows:
            with self._cursor(transaction=True) as cur:
                cur.executemany(self._sql(_UPSERT_INVENTORY), rows)

    def remove_inventory(self, kind: str, connection: str, name: str) -> bool:
        with self._cursor() as cur:
            cur.execute(
                self._sql(
                    "DELETE FROM inventory WHERE kind = %s AND connection = %s AND name = %s"
                ),
                (kind, connection, name),
            )
            return bool(cur.rowcount > 0)

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, *, command: str, started_at: datetime) -> str:
        run_id = uuid.uuid4().hex
        with self._cursor() as cur:
            cur.execute(
                self._sql("INSERT INTO runs (id, command, started_at) VALUES (%s, %s, %s)"),
                (run_id, command, self._stamp(started_at, "started_at")),
            )
        return run_id

    def finish_run(
        self,
        run_id: str,
        *,
        outcome: str,
        summary: Mapping[str, int],
        finished_at: datetime,
    ) -> None:
        with self._cursor() as cur:
            cur.execute(
                self._sql(
                    "UPDATE runs SET outcome = %s, summary = %s, finished_at = %s WHERE id = %s"
                ),
                (outcome, self._json_in(summary), self._stamp(finished_at, "finished_at"), run_id),
            )
            if cur.rowcount == 0:
                raise errors.StateError(f"state store {self.url}: no run with id {run_id!r}")

    def runs(self, limit: int = 20) -> list[RunRecord]:
        query = """SELECT id, command, started_at, finished_at, outcome, summary FROM runs
                   ORDER BY started_at DESC, id DESC LIMIT %s"""
        with self._rows(query, (limit,)) as rows:
            return [
                RunRecord(
                    id=id_,
                    command=command,
                    started_at=self._time_out(started),
                    finished_at=self._maybe_time(finished),
                    outcome=outcome,
                    summary=self._json_out(summary),
                )
                for id_, command, started, finished, outcome, summary in rows
            ]

    # -- backups ----------------------------------------------------------------------------

    def record_backup(self, record: BackupRecord) -> None:
        finished = record.finished_at
        with self._cursor() as cur:
            cur.execute(
                self._sql(_UPSERT_BACKUP),
                (
                    record.policy,
                    record.connection,
                    record.backup_id,
                    record.handle,
                    self._stamp(record.started_at, "started_at"),
                    record.state,
                    None if finished is None else self._stamp(finished, "finished_at"),
                    record.message,
                ),
            )

    def backups(self, *, policy: str, connection: str) -> list[BackupRecord]:
        query = """SELECT backup_id, handle, started_at, state, finished_at, message
                   FROM backups WHERE policy = %s AND connection = %s
                   ORDER BY started_at, backup_id"""
        with self._rows(query, (policy, connection)) as rows:
            return [
                BackupRecord(
                    policy=policy,
                    connection=connection,
                    backup_id=backup_id,
                    handle=handle,
                    started_at=self._time_out(started),
                    state=state,
                    finished_at=self._maybe_time(finished),
                    message=message,
                )
                for backup_id, handle, started, state, finished, message in rows
            ]

    # -- drift ------------------------------------------------------------------------------

    def update_drift(
        self, open_items: Mapping[str, str], *, now: datetime
    ) -> dict[str, DriftRecord]:
        stamp = self._stamp(now, "now")
        seen = self._time_out(stamp)
        result: dict[str, DriftRecord] = {}
        with self._cursor(transaction=True) as cur:
            # Two `converge drift` runs at once would both insert a newly drifting key.
            self._serialize(cur, "drift")
            cur.execute(self._sql("SELECT id, key, first_seen FROM drift WHERE closed_at IS NULL"))
            already = {key: (row_id, first) for row_id, key, first in cur.fetchall()}
            for key, detail in sorted(open_items.items()):
                if key in already:
                    row_id, first = already[key]
                    cur.execute(
                        self._sql("UPDATE drift SET last_seen = %s, detail = %s WHERE id = %s"),
                        (stamp, detail, row_id),
                    )
                else:
                    first = stamp
                    cur.execute(
                        self._sql(
                            """INSERT INTO drift (key, detail, first_seen, last_seen)
                               VALUES (%s, %s, %s, %s)"""
                        ),
                        (key, detail, stamp, stamp),
                    )
                result[key] = DriftRecord(
                    key=key, first_seen=self._time_out(first), last_seen=seen, detail=detail
                )
            gone = [
                (stamp, row_id) for key, (row_id, _) in already.items() if key not in open_items
            ]
            if gone:
                cur.executemany(self._sql("UPDATE drift SET closed_at = %s WHERE id = %s"), gone)
        return result

    def drift(self, *, include_closed: bool = False) -> list[DriftRecord]:
        where = "" if include_closed else " WHERE closed_at IS NULL"
        query = "SELECT key, detail, first_seen, last_seen, closed_at FROM drift"
        with self._rows(query + where + " ORDER BY key, first_seen") as rows:
            return [
                DriftRecord(
                    key=key,
                    detail=detail,
                    first_seen=self._time_out(first),
                    last_seen=self._time_out(last),
                    closed_at=self._maybe_time(closed),
                )
                for key, detail, first, last, closed in rows
            ]
