"""PostgreSQL-only behaviour: schemas, connection errors, the advisory lock's bookkeeping.

Runs against the session's throwaway server (``pg_server`` in ``conftest.py``).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from controller import errors, state
from controller.redaction import MASK
from controller.state.store import InventoryEntry

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def fresh_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def entry(name: str) -> InventoryEntry:
    return InventoryEntry(kind="RoleApp", connection="era-main", name=name, id=name, applied_at=T0)


def test_schemas_keep_estates_apart(pg_server: Any) -> None:
    prod, test = fresh_schema(), fresh_schema()
    a = state.open_store(pg_server.url(), schema=prod)
    b = state.open_store(pg_server.url(), schema=test)
    a2 = state.open_store(pg_server.url(), schema=prod)
    try:
        a.upsert_inventory([entry("only-in-prod")])
        assert b.inventory() == []
        assert [e.name for e in a2.inventory()] == ["only-in-prod"]
        with a.lock(holder="prod-apply", timeout=0):
            with b.lock(holder="test-apply", timeout=0):  # another estate: not blocked
                pass
            with (
                pytest.raises(errors.LockHeldError, match="prod-apply"),
                a2.lock(holder="second-prod-apply", timeout=0),
            ):
                pass
    finally:
        for store in (a, b, a2):
            store.close()
    with psycopg.connect(pg_server.url()) as conn:
        tables = conn.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables "
            "WHERE table_schema IN (%s, %s) GROUP BY table_schema",
            (prod, test),
        ).fetchall()
    assert dict(tables) == {prod: 6, test: 6}  # five tables and schema_version, each


def test_default_schema_is_public_in_a_fresh_database(pg_server: Any) -> None:
    url = pg_server.create_database(f"db_{uuid.uuid4().hex[:8]}")
    store = state.open_store(url)
    try:
        store.upsert_inventory([entry("x")])
        assert store.url == url.replace(pg_server.password, MASK)
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM public.inventory").fetchone()
    assert row == (1,)


def test_opening_a_fresh_schema_from_many_threads_at_once(pg_server: Any) -> None:
    schema = fresh_schema()
    failures: list[BaseException] = []

    def open_and_close() -> None:
        try:
            state.open_store(pg_server.url(), schema=schema).close()
        except BaseException as exc:  # collected and asserted on below
            failures.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []


@pytest.mark.parametrize(
    "case",
    ["wrong password", "nothing listening"],
)
def test_connection_errors_mask_the_password(pg_server: Any, case: str) -> None:
    secret = "Wr0ng-but-secret"
    if case == "wrong password":
        url = pg_server.url(password=secret)
    else:
        with socket.socket() as sock:  # bound but not listening: connections are refused
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = pg_server.url(password=secret, port=port)
    started = time.monotonic()
    with pytest.raises(errors.StateError) as caught:
        state.open_store(url, schema=fresh_schema())
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert secret not in message
    assert f"converge:{MASK}@127.0.0.1" in message
    assert ("password authentication failed" in message) == (case == "wrong password")
    assert caught.value.__cause__ is None  # the driver's own text is not chained on


def test_error_from_a_query_masks_the_password(pg_server: Any) -> None:
    schema = fresh_schema()
    store = state.open_store(pg_server.url(), schema=schema)
    try:
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}")
            conn.execute("DROP TABLE runs")
        with pytest.raises(errors.StateError, match="runs") as caught:
            store.runs()
        assert pg_server.password not in str(caught.value)
        assert MASK in str(caught.value)
    finally:
        store.close()


def test_invalid_schema_names_are_refused_before_connecting() -> None:
    for name in ("Prod", "a-b", "1st", "pg_catalog", "x" * 64, 'a"; DROP TABLE x; --'):
        with pytest.raises(errors.StateError, match="invalid state schema name"):
            state.open_store("postgresql://u:pw@127.0.0.1:1/db", schema=name)


def test_a_leftover_lock_row_without_a_session_is_not_a_lock(pg_server: Any) -> None:
    schema = fresh_schema()
    store = state.open_store(pg_server.url(), schema=schema)
    try:
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}")
            conn.execute(
                "INSERT INTO locks (name, holder, since, pid, host, token) "
                "VALUES ('state', 'ghost', now(), 1, 'elsewhere', 't')"
            )
        assert store.lock_info() is None
        with store.lock(holder="alive", timeout=0):
            info = store.lock_info()
            assert info is not None and info[0] == "alive"
    finally:
        store.close()


def test_the_store_reconnects_after_its_session_was_killed(pg_server: Any) -> None:
    store = state.open_store(pg_server.url(), schema=fresh_schema())
    try:
        store.upsert_inventory([entry("before")])
        with psycopg.connect(pg_server.admin_url(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = 'converge' AND pid <> pg_backend_pid()"
            )
        time.sleep(0.2)  # termination is asynchronous
        with pytest.raises(errors.StateError):
            store.inventory()  # the failure is reported, not hidden...
        assert [e.name for e in store.inventory()] == ["before"]  # ...and the next call works
    finally:
        store.close()
