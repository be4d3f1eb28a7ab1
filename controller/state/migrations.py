"""Versioned table definitions of the state stores, one list of steps per backend.

Called by ``sqlite.py`` and ``postgres.py`` when they open a store. A database records the
number of steps applied in its ``schema_version`` table (one row). Opening applies the
missing steps in one transaction; a database whose version is *newer* than the steps this
program knows was written by a later converge, and is refused rather than misread.

To change the tables, append a step to both lists (never edit a released step): a team
may run several converge versions against one PostgreSQL database during an upgrade.
Each step is a tuple of single statements, because neither driver promises to run a
multi-statement string with its normal ``execute``.
"""

from __future__ import annotations

from controller import errors

__all__ = [
    "POSTGRES_STEPS",
    "SQLITE_STEPS",
    "VERSION_TABLE",
    "check_version",
]

VERSION_TABLE = "schema_version"

Step = tuple[str, ...]

# SQLite: timestamps are fixed-width UTC text (sortable), booleans 0/1, JSON as text.
SQLITE_STEPS: tuple[Step, ...] = (
    (
        """CREATE TABLE inventory (
            kind TEXT NOT NULL, connection TEXT NOT NULL, name TEXT NOT NULL,
            id TEXT NOT NULL, prevent_destroy INTEGER NOT NULL DEFAULT 0,
            applied_at TEXT NOT NULL,
            PRIMARY KEY (kind, connection, name))""",
        """CREATE TABLE locks (
            name TEXT PRIMARY KEY, holder TEXT NOT NULL, since TEXT NOT NULL,
            pid INTEGER NOT NULL, host TEXT NOT NULL, token TEXT NOT NULL)""",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL,
            finished_at TEXT, outcome TEXT, summary TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX runs_started ON runs (started_at)",
        """CREATE TABLE backups (
            policy TEXT NOT NULL, connection TEXT NOT NULL, backup_id TEXT NOT NULL,
            handle TEXT NOT NULL, started_at TEXT NOT NULL, state TEXT NOT NULL,
            finished_at TEXT, message TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (policy, connection, backup_id))""",
        """CREATE TABLE drift (
            id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '', first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL, closed_at TEXT)""",
        # Closed episodes stay as history; at most one open episode per key.
        "CREATE UNIQUE INDEX drift_open_key ON drift (key) WHERE closed_at IS NULL",
    ),
)

# PostgreSQL: the same tables with native types. Names are unqualified: the store sets
# search_path to its schema, so `--state-schema` moves every table at once.
POSTGRES_STEPS: tuple[Step, ...] = (
    (
        """CREATE TABLE inventory (
            kind text NOT NULL, connection text NOT NULL, name text NOT NULL,
            id text NOT NULL, prevent_destroy boolean NOT NULL DEFAULT false,
            applied_at timestamptz NOT NULL,
            PRIMARY KEY (kind, connection, name))""",
        # Only the message about who holds the lock; the lock itself is an advisory lock.
        """CREATE TABLE locks (
            name text PRIMARY KEY, holder text NOT NULL, since timestamptz NOT NULL,
            pid integer NOT NULL, host text NOT NULL, token text NOT NULL)""",
        """CREATE TABLE runs (
            id text PRIMARY KEY, command text NOT NULL, started_at timestamptz NOT NULL,
            finished_at timestamptz, outcome text, summary jsonb NOT NULL DEFAULT '{}')""",
        "CREATE INDEX runs_started ON runs (started_at)",
        """CREATE TABLE backups (
            policy text NOT NULL, connection text NOT NULL, backup_id text NOT NULL,
            handle text NOT NULL, started_at timestamptz NOT NULL, state text NOT NULL,
            finished_at timestamptz, message text NOT NULL DEFAULT '',
            PRIMARY KEY (policy, connection, backup_id))""",
        """CREATE TABLE drift (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key text NOT NULL,
            detail text NOT NULL DEFAULT '', first_seen timestamptz NOT NULL,
            last_seen timestamptz NOT NULL, closed_at timestamptz)""",
        "CREATE UNIQUE INDEX drift_open_key ON drift (key) WHERE closed_at IS NULL",
    ),
)


def check_version(found: int, *, known: int, where: str) -> None:
    """Refuse a database written by a newer converge (``where`` is the masked URL)."""
    if found > known:
        raise errors.StateError(
            f"state store {where} has schema version {found}, newer than the {known} this "
            "converge knows: it was written by a later converge; upgrade converge to use it"
        )
