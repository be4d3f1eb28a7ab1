"""Where converge keeps what it remembers between runs: ``open_store(url)``.

Called by the CLI (``--state URL`` / ``CONVERGE_STATE``, ``--state-schema NAME``), which
hands the returned :class:`~controller.state.store.Store` to planning, applying and the
``converge state`` commands. URLs:

- ``sqlite:///relative/path.db`` (relative to the current directory) or
  ``sqlite:////absolute/path.db``: one file; a missing parent directory is created.
  ``schema`` is validated but otherwise ignored: a different file keeps estates apart.
- ``postgresql://user:password@host:port/db`` (or ``postgres://``): a team's shared state;
  ``schema`` (default ``public``) holds every table, so several estates share a database.

Every error is a ``StateError`` whose message shows the URL with its password masked.
"""

from __future__ import annotations

from pathlib import Path

from controller import errors, redaction
from controller.state.store import DEFAULT_SCHEMA, Store, validate_schema_name

__all__ = ["Store", "open_store"]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str, *, schema: str | None = None) -> Store:
    """Open (creating and migrating if needed) the state store at ``url``."""
    if schema is not None:
        validate_schema_name(schema)
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
        if not path:
            raise errors.StateError(f"state URL {url!r} names no file: use sqlite:///PATH")
        # Imported here so a SQLite user never pays for importing psycopg, and vice versa.
        from controller.state import sqlite

        return sqlite.SqliteStore(Path(path), url=url)
    if url.startswith(_POSTGRES_SCHEMES):
        from controller.state import postgres

        return postgres.PostgresStore(url, schema=schema or DEFAULT_SCHEMA)
    raise errors.StateError(
        f"unknown kind of state URL {redaction.mask_url(url)!r}: "
        "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
    )
