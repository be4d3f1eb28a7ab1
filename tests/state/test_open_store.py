"""``open_store``: URL forms, SQLite files and directories, refusals; plus SQLite-only locks.

Backend-independent behaviour lives in ``test_store.py``; PostgreSQL-only in
``test_postgres_server.py``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller import errors, state
from controller.redaction import MASK


def test_relative_sqlite_path_is_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = state.open_store("sqlite:///.converge/nested/state.db")
    store.close()
    assert (tmp_path / ".converge" / "nested" / "state.db").is_file()


def test_absolute_sqlite_path(tmp_path: Path) -> None:
    target = tmp_path / "abs" / "state.db"
    store = state.open_store(f"sqlite:///{target}")  # sqlite:////tmp/... : four slashes
    try:
        assert store.url.startswith("sqlite:////")
    finally:
        store.close()
    assert target.is_file()


def test_sqlite_ignores_a_valid_schema_but_refuses_an_invalid_one(tmp_path: Path) -> None:
    state.open_store(f"sqlite:///{tmp_path}/s.db", schema="estate_a").close()
    with pytest.raises(errors.StateError, match="invalid state schema name"):
        state.open_store(f"sqlite:///{tmp_path}/s.db", schema="Estate-A")


@pytest.mark.parametrize(
    "url",
    ["mysql://admin:hunter22@db/state", "state.db", "sqlite://relative.db", "sqlite:///"],
)
def test_unusable_urls_are_state_errors_with_the_password_masked(url: str) -> None:
    with pytest.raises(errors.StateError) as caught:
        state.open_store(url)
    assert "hunter22" not in str(caught.value)
    if "hunter22" in url:
        assert f"admin:{MASK}@db" in str(caught.value)


def test_an_unopenable_sqlite_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(errors.StateError, match=r"state store sqlite:///.*dir\.db"):
        state.open_store(f"sqlite:///{tmp_path}/dir.db")


def test_a_file_that_is_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"not a database, just text " * 100)
    with pytest.raises(errors.StateError, match="not a database"):
        state.open_store(f"sqlite:///{tmp_path}/junk.db")


def _plant_lock(path: Path, *, pid: int, host: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "INSERT INTO locks (name, holder, since, pid, host, token) VALUES (?, ?, ?, ?, ?, ?)",
            ("state", "planted", datetime(2026, 1, 1, tzinfo=UTC).isoformat(), pid, host, "t"),
        )
        conn.commit()
    finally:
        conn.close()


def _dead_pid() -> int:
    # A pid that is not running: a child we started and reaped.
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        child.wait(timeout=30)
    return child.pid


def test_sqlite_lock_of_a_dead_pid_on_this_host_is_taken_over(tmp_path: Path) -> None:
    store = state.open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        _plant_lock(tmp_path / "s.db", pid=_dead_pid(), host=socket.gethostname())
        assert store.lock_info() is None
        with store.lock(holder="me", timeout=0):
            assert store.lock_info() is not None
    finally:
        store.close()


def test_sqlite_lock_held_on_another_host_is_respected(tmp_path: Path) -> None:
    store = state.open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        _plant_lock(tmp_path / "s.db", pid=_dead_pid(), host="some-other-host")
        info = store.lock_info()
        assert info == ("planted", datetime(2026, 1, 1, tzinfo=UTC))
        with (
            pytest.raises(errors.LockHeldError, match="planted since 2026-01-01T00:00:00Z"),
            store.lock(holder="me", timeout=0),
        ):
            pass
        assert store.force_unlock() is True
        with store.lock(holder="me", timeout=0):
            pass
    finally:
        store.close()
