"""Fixtures for the state store tests: the same tests run on SQLite and on PostgreSQL.

``backend`` is parametrized over ``sqlite`` and ``postgresql``; ``store`` is an open store
on it. PostgreSQL tests share one throwaway server per session (``tests/pgserver.py``) and
get a fresh schema each, so they stay fast and independent. Without PostgreSQL binaries
they skip with the reason shown by ``-ra`` — except under ``CI=true``, where a missing
server is a failure: CI must never pass by skipping the team backend.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from controller import state
from controller.state.store import Store


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """One place a store can live, plus a raw SQL back door for tests that tamper."""

    name: str
    url: str
    schema: str | None
    execute: Callable[[str], None]

    def open(self, *, schema: str | None = None) -> Store:
        return state.open_store(self.url, schema=schema or self.schema)


def _sqlite_backend(tmp_path: Path) -> Backend:
    import sqlite3

    path = tmp_path / "state" / "state.db"

    def execute(statement: str) -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute(statement)
            conn.commit()
        finally:
            conn.close()

    return Backend("sqlite", f"sqlite:///{path}", None, execute)


def _pg_backend(server: Any) -> Backend:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = server.url()

    def execute(statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"SET search_path TO {schema}")
            conn.execute(statement)

    return Backend("postgresql", url, schema, execute)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    return _pg_backend(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    try:
        yield opened
    finally:
        opened.close()
