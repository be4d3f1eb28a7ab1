"""Era's list and read query grammar — ``mask``, ``filter``, ``order``, ``flat`` — and its clock.

Pure functions used by ``era.py``. The grammar is the project's assumption (apis.md §1, the
vendor docs name the parameters without one):

- ``mask``: comma-separated fields, dotted for nested (``id,title,ext.lwt``).
- ``filter``: a JSON object of exact matches, ANDed; keys may be dotted (``{"ext.ct": ...}``).
- ``order``: a JSON array of ``"field"`` (ascending) or ``{"field": "asc"|"desc"}``.
- ``flat=true``: nested objects come back as dotted keys (lists stay values).

Malformed input raises ``core.BadRequest`` so the API answers 400/1400.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from controller.emulator import core

__all__ = [
    "OrderKey",
    "apply_mask",
    "flatten",
    "get_path",
    "matches",
    "parse_bool",
    "parse_filter",
    "parse_mask",
    "parse_order",
    "sort_entities",
    "timestamp",
]

_MISSING = object()

OrderKey = tuple[str, bool]  # (dotted field, descending)


def timestamp(seconds: float, *, fraction: bool = True) -> str:
    """Era's ISO-8601 UTC form with exactly two fraction digits: ``2019-08-27T13:45:19.66Z``."""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    if not fraction:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 10_000:02d}Z"


def get_path(obj: Any, dotted: str, default: Any = _MISSING) -> Any:
    """``get_path({"ext": {"ct": x}}, "ext.ct") == x``; ``default`` (a sentinel) when absent."""
    current = obj
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return default
        current = current[part]
    return current


def parse_bool(text: str | None, name: str) -> bool:
    if text is None or text == "":
        return False
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise core.BadRequest(f"{name} must be true or false, not {text!r}")


def parse_mask(text: str | None) -> list[list[str]] | None:
    """``"id,ext.lwt"`` → ``[["id"], ["ext", "lwt"]]``; None when there is no mask."""
    if text is None or not text.strip():
        return None
    paths = []
    for field in text.split(","):
        field = field.strip()
        parts = field.split(".")
        if not field or any(not part for part in parts):
            raise core.BadRequest(f"invalid mask field {field!r}")
        paths.append(parts)
    return paths


def apply_mask(entity: Mapping[str, Any], paths: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Only the masked fields, nesting kept; fields the entity lacks are left out."""
    result: dict[str, Any] = {}
    for parts in paths:
        if len(parts) == 1:
            # The usual mask names top-level fields only: nothing to walk or nest.
            if parts[0] in entity:
                result[parts[0]] = entity[parts[0]]
            continue
        source: Any = entity
        for part in parts:
            if not isinstance(source, Mapping) or part not in source:
                source = _MISSING
                break
            source = source[part]
        if source is _MISSING:
            continue
        target = result
        for part in parts[:-1]:
            existing = target.get(part)
            if not isinstance(existing, dict):
                existing = target[part] = {}
            target = existing
        target[parts[-1]] = source
    return result


def flatten(entity: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"ext": {"ct": x}}`` → ``{"ext.ct": x}``; an empty object stays as its own value."""
    flat: dict[str, Any] = {}
    for key, value in entity.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _json_param(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise core.BadRequest(f"{name} is not valid JSON: {exc}") from None


def parse_filter(text: str | None) -> dict[str, Any] | None:
    """The ``filter`` object (already URL-decoded by the server), or None."""
    if text is None or not text.strip():
        return None
    parsed = _json_param(text, "filter")
    if not isinstance(parsed, dict):
        raise core.BadRequest("filter must be a JSON object of field: value")
    return parsed


def matches(entity: Mapping[str, Any], conditions: Mapping[str, Any]) -> bool:
    """Every condition is an exact match; a null condition also matches an absent field."""
    for field, wanted in conditions.items():
        actual = get_path(entity, field, None)
        # bool is an int in Python: True must not match 1, so compare the types too.
        if actual != wanted or isinstance(actual, bool) != isinstance(wanted, bool):
            return False
    return True


def parse_order(text: str | None) -> list[OrderKey] | None:
    """``'["title", {"ext.ct": "desc"}]'`` → ``[("title", False), ("ext.ct", True)]``."""
    if text is None or not text.strip():
        return None
    parsed = _json_param(text, "order")
    if isinstance(parsed, str | dict):
        parsed = [parsed]  # a lone field is read as a one-element list
    if not isinstance(parsed, list):
        raise core.BadRequest("order must be a JSON array")
    keys: list[OrderKey] = []
    for item in parsed:
        if isinstance(item, str) and item:
            keys.append((item, False))
        elif isinstance(item, dict) and item:
            for field, direction in item.items():
                if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
                    raise core.BadRequest(f"order direction of {field!r} must be asc or desc")
                keys.append((field, direction.lower() == "desc"))
        else:
            raise core.BadRequest(f"invalid order item {item!r}")
    return keys


def _sortable(value: Any) -> tuple[int, Any]:
    # Values of different JSON types never compare in Python: rank the type first.
    if value is None or value is _MISSING:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    return (4, json.dumps(value, sort_keys=True, ensure_ascii=False))


def _sort_key(field: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    """The sort key for one dotted field (a function per field, so each key binds its own)."""
    return lambda entity: _sortable(get_path(entity, field, None))


def sort_entities(
    entities: Iterable[dict[str, Any]], order: Sequence[OrderKey]
) -> list[dict[str, Any]]:
    """Sorted by ``order``; ties keep the incoming (default) order, since sorts are stable."""
    result = list(entities)
    for field, descending in reversed(order):
        result.sort(key=_sort_key(field), reverse=descending)
    return result
