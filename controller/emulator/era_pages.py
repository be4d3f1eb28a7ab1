"""The JSON bodies of Era's roleapp pages, built from each entity's cached encoding.

Used by ``era.py`` for ``GET /rest/v1/domain/roleapps``. Why a cache: a page of 500 masked
roleapps cost ~5 ms of emulator CPU (more on a busy machine), nearly all of it projecting
each entity through the ``mask`` and JSON-encoding the result. The emulator serves every
request under one GIL, so that CPU bounded how fast any client could list, however
concurrent, and showed up in the benchmarks as if it were the client's.

Both steps depend only on the stored entity and the request's ``mask``/``flat``, and a
stored entity is never changed in place (``era_roleapps`` returns a new one for every
write; ``storage`` documents its values as read-only). So each entity's encoded shape is
kept next to the very object it was made from, and is valid as long as the stored entity
is that object (``is``): a write re-encodes only the entity it replaced, and nothing has to
be dropped on writes. Holding the object also keeps its ``id()`` from being reused.

A page is then ``[`` + the fragments joined by ``,`` + ``]``: byte for byte what
``json.dumps(page, ensure_ascii=False, separators=(",", ":"))`` gives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controller.emulator import core

__all__ = ["PageEncoder", "ShapeKey"]

# (mask as parsed — None for whole entities —, flat): what an encoding depends on besides
# the entity.
ShapeKey = tuple[tuple[tuple[str, ...], ...] | None, bool]

# Distinct shapes kept; a client uses one or two masks, so more means a test or a human.
_MAX_SHAPES = 8


class PageEncoder:
    """Cached per-entity encodings for each request shape; thread-safe."""

    def __init__(self) -> None:
        # Dict reads and writes are atomic under the GIL; the lock only keeps the shape
        # table's bound and clears consistent. Two threads encoding the same cold entity at
        # once both store the same bytes, which is harmless.
        self._lock = threading.Lock()
        self._shapes: dict[ShapeKey, dict[str, tuple[Mapping[str, Any], bytes]]] = {}

    def encode(
        self,
        page: Sequence[Mapping[str, Any]],
        key: ShapeKey,
        shape: Callable[[Mapping[str, Any]], Any],
    ) -> bytes:
        """The JSON array of ``shape(entity)`` for each entity of ``page``, as UTF-8 bytes."""
        fragments = self._fragments(key)
        parts = []
        for entity in page:
            cached = fragments.get(entity["id"])
            if cached is None or cached[0] is not entity:
                cached = (entity, core.encode_json(shape(entity)))
                fragments[entity["id"]] = cached
            parts.append(cached[1])
        return b"[" + b",".join(parts) + b"]"

    def forget(self, roleapp_id: str) -> None:
        """Drop a deleted roleapp's encodings (only memory: a stale one never matches)."""
        with self._lock:
            for fragments in self._shapes.values():
                fragments.pop(roleapp_id, None)

    def clear(self) -> None:
        with self._lock:
            self._shapes.clear()

    def _fragments(self, key: ShapeKey) -> dict[str, tuple[Mapping[str, Any], bytes]]:
        fragments = self._shapes.get(key)
        if fragments is None:
            with self._lock:
                if len(self._shapes) >= _MAX_SHAPES:
                    self._shapes.clear()
                fragments = self._shapes.setdefault(key, {})
        return fragments
