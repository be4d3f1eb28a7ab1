"""Write-through persistence for the emulated APIs: namespaced key → object collections.

Each API owns one :class:`Storage` (its own SQLite file under the data directory, or memory
when no directory is given). Values are JSON-able objects or ``bytes`` (attachments).

Why this shape:

- Every read is served from an in-memory cache loaded at open, so listing 10,000 objects in
  pages never touches the disk.
- Every write is committed before ``put``/``delete`` returns (autocommit, WAL journal,
  ``synchronous=NORMAL``): an acknowledged write survives a SIGKILL of the emulator process,
  which is exactly the crash the controller's "lost answer" tests simulate. (NORMAL may lose
  the last commits on a power cut; that is not a case the emulator needs.)
- One connection guarded by one lock: the emulator's threads are many but its writes are
  small, and SQLite serialises writers anyway.

Cached values are returned as stored, not copied: treat what ``get``/``items`` return as
read-only and ``put`` a changed copy.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["Storage"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    kind       TEXT NOT NULL,      -- 'j' JSON text, 'b' raw bytes
    value      BLOB NOT NULL,
    PRIMARY KEY (collection, key)
)
"""


def _encode(obj: Any) -> tuple[str, bytes | str]:
    if isinstance(obj, bytes | bytearray | memoryview):
        return "b", bytes(obj)
    return "j", json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _decode(kind: str, value: bytes | str) -> Any:
    if kind == "b":
        # A "b" row was written from bytes, and sqlite3 reads a BLOB back as bytes.
        assert isinstance(value, bytes)
        return value
    return json.loads(value)


class Storage:
    """A small SQLite store of objects in named collections; see the module docstring."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = ":memory:" if self.path is None else str(self.path)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, so each statement is durable when it returns.
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._cache: dict[str, dict[str, Any]] = {}
        # rowid order = insertion order, so ``items`` keeps its order across a restart.
        rows = self._db.execute("SELECT collection, key, kind, value FROM objects ORDER BY rowid")
        for collection, key, kind, value in rows:
            self._cache.setdefault(collection, {})[key] = _decode(kind, value)

    def put(self, collection: str, key: str, obj: Any, *, text: str | None = None) -> None:
        """Store ``obj`` under ``key`` (insert or replace); durable on return.

        ``text`` is ``obj`` already encoded as compact JSON (``ensure_ascii=False``), when the
        caller made it anyway for its answer: a write then encodes once, not twice.
        """
        kind, value = ("j", text) if text is not None else _encode(obj)
        with self._lock:
            self._db.execute(
                "INSERT INTO objects (collection, key, kind, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (collection, key) DO UPDATE SET kind = excluded.kind, "
                "value = excluded.value",
                (collection, key, kind, value),
            )
            self._cache.setdefault(collection, {})[key] = obj

    def put_many(self, collection: str, items: Iterable[tuple[str, Any]]) -> None:
        """Store many objects in one transaction (seeding 10,000 roleapps is one commit)."""
        encoded = [(key, obj, *_encode(obj)) for key, obj in items]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO objects (collection, key, kind, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (collection, key) DO UPDATE SET kind = excluded.kind, "
                    "value = excluded.value",
                    [(collection, key, kind, value) for key, _, kind, value in encoded],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            cached = self._cache.setdefault(collection, {})
            for key, obj, _, _ in encoded:
                cached[key] = obj

    def get(self, collection: str, key: str, default: Any = None) -> Any:
        """The stored object, or ``default``."""
        with self._lock:
            return self._cache.get(collection, {}).get(key, default)

    def delete(self, collection: str, key: str) -> bool:
        """Remove one object; True if it existed."""
        with self._lock:
            cached = self._cache.get(collection, {})
            if key not in cached:
                return False
            self._db.execute(
                "DELETE FROM objects WHERE collection = ? AND key = ?", (collection, key)
            )
            del cached[key]
            return True

    def items(self, collection: str) -> list[tuple[str, Any]]:
        """Every ``(key, object)`` of the collection, in insertion order."""
        with self._lock:
            return list(self._cache.get(collection, {}).items())

    def keys(self, collection: str) -> list[str]:
        with self._lock:
            return list(self._cache.get(collection, {}))

    def count(self, collection: str) -> int:
        with self._lock:
            return len(self._cache.get(collection, {}))

    def clear(self, collection: str | None = None) -> None:
        """Empty one collection, or every collection when ``collection`` is None."""
        with self._lock:
            if collection is None:
                self._db.execute("DELETE FROM objects")
                self._cache.clear()
            else:
                self._db.execute("DELETE FROM objects WHERE collection = ?", (collection,))
                self._cache.pop(collection, None)

    def close(self) -> None:
        with self._lock:
            self._db.close()
