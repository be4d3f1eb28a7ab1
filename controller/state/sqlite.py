"""The state store in one SQLite file: the default for one person or one CI job.

Created by ``controller.state.open_store`` for ``sqlite:///PATH`` URLs. One connection,
guarded by one re-entrant lock, because the applier calls the store from worker threads
and a sqlite3 connection must not run two statements at once. Every write runs in a
``BEGIN IMMEDIATE`` transaction, so two converge processes on the same file serialise
(each waits up to ``BUSY_TIMEOUT`` for the other's write) instead of failing.

The state lock is a row in ``locks`` naming the holder's pid and host. SQLite has no
sessions to die with a process, so a lock whose holder pid is dead *on this host* is
stale and is taken over: a SIGKILLed apply does not block the next one. A holder on
another host (a shared network file) cannot be checked and needs `converge state unlock`.

SQLite ignores ``--state-schema``: a different file is how estates are kept apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller import errors, redaction
from controller.state import migrations
from controller.state.queries import SqlStore
from controller.state.store import to_utc, wait_for_lock

__all__ = ["BUSY_TIMEOUT", "SqliteStore"]

# Seconds a write waits for another process's write transaction on the same file; writes
# are tiny, so a longer wait means something is stuck and deserves an error.
BUSY_TIMEOUT = 5.0

_LOCK_NAME = "state"


def _text(moment: datetime, what: str) -> str:
    # Fixed width (microseconds always present) so text order is time order.
    return to_utc(moment, what).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    # A killed process its parent has not reaped yet is a zombie: signal 0 still succeeds,
    # but it holds nothing any more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust the signal
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _holder_gone(pid: int, host: str) -> bool:
    return host == socket.gethostname() and not _pid_alive(pid)


def _fast_commits(conn: sqlite3.Connection) -> None:
    """WAL journal, ``synchronous=NORMAL``: a commit is a WAL append, not three fsyncs.

    Why: apply records each created object as soon as it exists, and with the default
    rollback journal every such commit waited ~2.5 ms for the disk, serialising a
    1,000-object apply behind 2.5 s of fsyncs. A commit still survives a crash or SIGKILL
    of converge; only an OS crash or power cut may lose the last commits, and those facts
    are found again (deterministic create ids; a lost backup record only keeps a backup
    longer). WAL also lets ``converge state list`` read while an apply writes.
    """
    with contextlib.suppress(sqlite3.OperationalError):  # busy: keep the current journal
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


class SqliteStore(SqlStore):
    """:class:`controller.state.store.Store` on a local SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        url: str,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = redaction.mask_url(url)
        self._sleep = sleep
        self._now = now
        self._guard = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            _fast_commits(self._conn)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> errors.StateError:
        return errors.StateError(redaction.mask_url(f"state store {self.url}: {exc}"))

    @contextlib.contextmanager
    def _cursor(self, *, transaction: bool = False) -> Iterator[sqlite3.Cursor]:
        # Without a transaction each statement commits alone (isolation_level=None). With
        # one, BEGIN IMMEDIATE takes the write lock up front, waiting out another process's
        # writer (busy timeout), instead of failing half way through on a read→write upgrade.
        with self._guard:
            try:
                if not transaction:
                    yield self._conn.cursor()
                    return
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn.cursor()
                except BaseException:
                    self._conn.rollback()
                    raise
                self._conn.commit()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _sql(self, query: str) -> str:
        return query.replace("%s", "?")

    def _time_in(self, moment: datetime) -> str:
        return _text(moment, "timestamp")

    def _time_out(self, value: Any) -> datetime:
        return _time(value)

    def _json_in(self, value: Mapping[str, int]) -> str:
        return json.dumps(dict(value), sort_keys=True)

    def _json_out(self, value: Any) -> dict[str, int]:
        return dict(json.loads(value))

    def _migrate(self) -> None:
        known = len(migrations.SQLITE_STEPS)
        with self._cursor(transaction=True) as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {migrations.VERSION_TABLE} (version INTEGER NOT NULL)"
            )
            found = cur.execute(f"SELECT max(version) FROM {migrations.VERSION_TABLE}").fetchone()
            version = int(found[0] or 0)
            migrations.check_version(version, known=known, where=self.url)
            if version == known:
                return
            for step in migrations.SQLITE_STEPS[version:]:
                for statement in step:
                    cur.execute(statement)
            cur.execute(f"DELETE FROM {migrations.VERSION_TABLE}")
            cur.execute(f"INSERT INTO {migrations.VERSION_TABLE} (version) VALUES (?)", (known,))

    def close(self) -> None:
        with self._guard:
            self._conn.close()

    # -- the state lock ---------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, holder: str, timeout: float) -> Iterator[None]:
        token = uuid.uuid4().hex  # so release never deletes a lock someone else took over
        wait_for_lock(lambda: self._try_lock(holder, token), timeout=timeout, sleep=self._sleep)
        try:
            yield
        except BaseException:
            # The body's error matters more than a failed release; don't mask it.
            with contextlib.suppress(errors.StateError):
                self._release(token)
            raise
        self._release(token)

    def _try_lock(self, holder: str, token: str) -> tuple[str, datetime] | None:
        with self._cursor(transaction=True) as cur:
            row = cur.execute(
                "SELECT holder, since, pid, host FROM locks WHERE name = ?", (_LOCK_NAME,)
            ).fetchone()
            if row is not None and not _holder_gone(row[2], row[3]):
                return row[0], _time(row[1])
            cur.execute(
                """INSERT OR REPLACE INTO locks (name, holder, since, pid, host, token)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (
                    _LOCK_NAME,
                    holder,
                    _text(self._now(), "since"),
                    os.getpid(),
                    socket.gethostname(),
                    token,
                ),
            )
            return None

    def _release(self, token: str) -> None:
        with self._cursor() as cur:
            cur.execute("DELETE FROM locks WHERE name = ? AND token = ?", (_LOCK_NAME, token))

    def lock_info(self) -> tuple[str, datetime] | None:
        with self._cursor() as cur:
            query = "SELECT holder, since, pid, host FROM locks WHERE name = ?"
            rows = cur.execute(query, (_LOCK_NAME,)).fetchall()
        if not rows or _holder_gone(rows[0][2], rows[0][3]):
            return None
        return rows[0][0], _time(rows[0][1])

    def force_unlock(self) -> bool:
        with self._cursor() as cur:
            return cur.execute("DELETE FROM locks WHERE name = ?", (_LOCK_NAME,)).rowcount > 0
