"""The state store on PostgreSQL: a team's shared state. The only psycopg importer.

Created by ``controller.state.open_store`` for ``postgresql://`` URLs. Every table lives
in one schema (``--state-schema``, default ``public``; created if missing), so several
estates can share a database. One autocommit connection serves reads and writes, guarded
by a re-entrant lock because the applier calls the store from worker threads; writes that
touch several rows run in an explicit transaction.

The state lock is a session-level advisory lock (key derived from the schema name) taken
on a *dedicated* connection held for the lock's lifetime: if the holding process dies, its
connection closes and PostgreSQL drops the lock by itself, so a SIGKILLed apply never
leaves the estate locked. The ``locks`` row only says who holds it and since when, for the
"locked by ..." message; it is believed only while the advisory lock is really held.

psycopg errors become ``StateError`` here, with the URL's password masked everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from controller import errors, redaction
from controller.state import migrations
from controller.state.queries import SqlStore
from controller.state.store import to_utc, validate_schema_name, wait_for_lock

__all__ = ["CONNECT_TIMEOUT", "PostgresStore"]

# Seconds to wait for the server to answer a connection attempt: long enough for a
# database across a WAN, short enough that a typo in the host fails a CI job quickly.
CONNECT_TIMEOUT = 10

# How long force_unlock waits for a terminated holder's backend to let go of the lock.
_TERMINATE_WAIT = 5.0

_LOCK_NAME = "state"

# Sessions holding our advisory lock. A bigint key shows in pg_locks split in two 32-bit
# halves (classid high, objid low) with objsubid 1.
_HOLDER_PIDS = """
    SELECT pid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid::bigint = %s AND objid::bigint = %s
"""


def _key(purpose: str, schema: str) -> int:
    digest = hashlib.sha256(f"converge.state.{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStore(SqlStore):
    """:class:`controller.state.store.Store` on a PostgreSQL schema."""

    def __init__(
        self,
        url: str,
        *,
        schema: str,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.url = redaction.mask_url(url)
        self._dsn = url
        self._secrets = self._url_secrets(url)
        self._schema = validate_schema_name(schema)
        self._lock_key = _key("lock", schema)
        self._sleep = sleep
        self._now = now
        self._guard = threading.RLock()
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _url_secrets(url: str) -> list[str]:
        try:
            password = urllib.parse.urlsplit(url).password
        except ValueError:
            return []
        return [] if not password else [password, urllib.parse.unquote(password)]

    def _error(self, exc: BaseException) -> errors.StateError:
        text = f"state store {self.url}: {str(exc).strip()}"
        return errors.StateError(redaction.redact(text, self._secrets))

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                fallback_application_name="converge",
                # No server-side prepared statements: teams often sit behind pgbouncer in
                # transaction mode, where they break; our few queries gain nothing from them.
                prepare_threshold=None,
            )
        except psycopg.Error as exc:
            # `from None`: the driver's own exception is not shown, but must not leak either.
            raise self._error(exc) from None
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            # Harmless before the schema exists: an absent schema in search_path is skipped.
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc) from exc
        return conn

    @contextlib.contextmanager
    def _cursor(self, *, transaction: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        with self._guard:
            try:
                if self._conn.closed or self._conn.broken:
                    self._conn = self._connect()  # the server restarted: one fresh try
                with contextlib.ExitStack() as stack:
                    if transaction:
                        stack.enter_context(self._conn.transaction())
                    yield stack.enter_context(self._conn.cursor())
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    def _time_out(self, value: Any) -> datetime:
        return value.astimezone(UTC)

    def _json_in(self, value: Mapping[str, int]) -> Any:
        return Jsonb(dict(value))

    def _json_out(self, value: Any) -> dict[str, int]:
        return dict(value)  # jsonb arrives already decoded

    def _serialize(self, cur: Any, purpose: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_key(purpose, self._schema),))

    def _migrate(self) -> None:
        known = len(migrations.POSTGRES_STEPS)
        schema = sql.Identifier(self._schema)
        version_table = sql.Identifier(self._schema, migrations.VERSION_TABLE)
        with self._cursor(transaction=True) as cur:
            # Two converge processes opening a fresh schema at once: the second waits here.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_key("migrate", self._schema),))
            # Look first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even
            # when the schema exists, which a team's restricted user may lack.
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
                # Setting it again makes the session see the schema it just created.
                cur.execute(sql.SQL("SET search_path TO {}").format(schema))
            cur.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (version integer NOT NULL)").format(
                    version_table
                )
            )
            cur.execute(sql.SQL("SELECT max(version) FROM {}").format(version_table))
            row = cur.fetchone()
            version = int(row[0] or 0) if row else 0
            migrations.check_version(version, known=known, where=self.url)
            if version == known:
                return
            for step in migrations.POSTGRES_STEPS[version:]:
                for statement in step:
                    cur.execute(statement)
            cur.execute(sql.SQL("DELETE FROM {}").format(version_table))
            cur.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(version_table), (known,)
            )

    def close(self) -> None:
        with self._guard:
            self._conn.close()

    # -- the state lock ---------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, holder: str, timeout: float) -> Iterator[None]:
        conn = self._connect()  # the session whose life is the lock's life
        token = uuid.uuid4().hex  # so release never deletes a row someone else wrote
        try:
            wait_for_lock(
                lambda: self._try_lock(conn, holder, token), timeout=timeout, sleep=self._sleep
            )
        except BaseException:
            conn.close()
            raise
        try:
            yield
        finally:
            self._release(conn, token)

    def _try_lock(
        self, conn: psycopg.Connection[Any], holder: str, token: str
    ) -> tuple[str, datetime] | None:
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()
            if row and row[0]:
                conn.execute(
                    """INSERT INTO locks (name, holder, since, pid, host, token)
                       VALUES (%s, %s, %s, %s, %s, %s)
                       ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                         since = excluded.since, pid = excluded.pid, host = excluded.host,
                         token = excluded.token""",
                    (
                        _LOCK_NAME,
                        holder,
                        to_utc(self._now(), "now"),
                        os.getpid(),
                        socket.gethostname(),
                        token,
                    ),
                )
                return None
            info = conn.execute(
                "SELECT holder, since FROM locks WHERE name = %s", (_LOCK_NAME,)
            ).fetchone()
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        if info is None:  # the holder has the lock but has not written its name yet
            return "another session", self._now()
        return info[0], self._time_out(info[1])

    def _release(self, conn: psycopg.Connection[Any], token: str) -> None:
        # Errors are ignored on purpose: if the session broke (force_unlock, a server
        # restart), the lock went with it, and closing the connection drops it anyway.
        with contextlib.suppress(psycopg.Error):
            conn.execute("DELETE FROM locks WHERE name = %s AND token = %s", (_LOCK_NAME, token))
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def _holder_pids(self, cur: psycopg.Cursor[Any]) -> list[int]:
        unsigned = self._lock_key & 0xFFFFFFFFFFFFFFFF
        cur.execute(_HOLDER_PIDS, (unsigned >> 32, unsigned & 0xFFFFFFFF))
        return [r[0] for r in cur.fetchall()]

    def lock_info(self) -> tuple[str, datetime] | None:
        with self._cursor() as cur:
            if not self._holder_pids(cur):
                return None  # a row left by a crashed holder means nothing
            row = cur.execute(
                "SELECT holder, since FROM locks WHERE name = %s", (_LOCK_NAME,)
            ).fetchone()
        return None if row is None else (row[0], self._time_out(row[1]))

    def force_unlock(self) -> bool:
        with self._cursor() as cur:
            cur.execute("DELETE FROM locks WHERE name = %s", (_LOCK_NAME,))
            cleared = cur.rowcount > 0
            pids = self._holder_pids(cur)
            for pid in pids:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # Termination is asynchronous; wait (bounded) so the next lock() just works.
            deadline = time.monotonic() + _TERMINATE_WAIT
            while pids and self._holder_pids(cur) and time.monotonic() < deadline:
                self._sleep(0.05)
        return cleared or bool(pids)
