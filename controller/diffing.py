"""Desired vs live for one roleapp: which managed fields differ, and what to send.

Called by ``controller.planning`` once per declared roleapp that is live (and by drift
reporting through the plan). Pure and cheap: a plan over 10,000 roleapps calls ``diff``
10,000 times, and nearly all of them are unchanged.

Manifest semantics (manifests.md): only the keys written in the manifest are managed;
inside ``opts`` each key counts on its own; ``roles`` is a set; server-owned fields
(``archive``, ``ext``, ``opts.attachment_info``) are never compared or sent;
``lifecycle.ignoreFields`` paths are not drift.

Why no deepdiff here: the managed shape is two levels deep (top-level keys, then ``opts``
keys), so a 20-line walk gives dotted paths directly, while DeepDiff would need its
``root['opts']['x']`` paths translated back and would cost ~100x more per object. It stays
the only module allowed to import deepdiff should a deeper shape ever need it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from controller import redaction
from controller.manifests import RoleApp
from controller.plans import FieldChange

SERVER_OWNED_TOP = frozenset({"id", "archive", "ext"})
SERVER_OWNED_OPTS = frozenset({"attachment_info"})

_MISSING: Any = None  # a managed key absent from the live object compares (and shows) as null


def fingerprint(live: Mapping[str, Any]) -> str:
    """A stable hash of the whole live object as read, for the stale-plan check.

    The whole object, server-owned fields included: ``ext.lwt`` moving means someone wrote
    to it since we planned, even if no managed field changed.
    """
    text = json.dumps(live, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def diff(desired: RoleApp, live: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """The managed fields of ``desired`` whose live value differs, sorted by path.

    Fast path first: ``_unchanged`` proves most objects equal without building anything;
    then a canonical projection of both sides compared with plain ``==``; the per-field
    walk runs only for objects that differ.
    """
    ignored = desired.lifecycle.ignore_fields
    if not ignored and _unchanged(desired.fields, live):
        return ()
    want = _project(desired.fields, desired.fields, ignored)
    have = _project(live, desired.fields, ignored)
    if want == have:
        return ()
    changes: list[FieldChange] = []
    for key in sorted(want):
        if key == "opts":
            before_opts, after_opts = have.get("opts") or {}, want["opts"]
            for opt in sorted(after_opts):
                before, after = before_opts.get(opt, _MISSING), after_opts[opt]
                if before != after:
                    changes.append(field_change(f"opts.{opt}", before, after))
        elif have.get(key, _MISSING) != want[key]:
            changes.append(field_change(key, have.get(key, _MISSING), want[key]))
    return tuple(changes)


def create_body(desired: RoleApp, *, id: str) -> dict[str, Any]:
    """The entity a create POSTs: every field the manifest writes, with the chosen id.

    ``ignoreFields`` do not apply: they say which live changes are not drift, not which
    fields a new object leaves out.
    """
    body: dict[str, Any] = {
        key: _copy(value) for key, value in desired.fields.items() if key not in SERVER_OWNED_TOP
    }
    if isinstance(body.get("opts"), dict):
        body["opts"] = {k: v for k, v in body["opts"].items() if k not in SERVER_OWNED_OPTS}
    body["id"] = id
    return body


def patch_body(
    desired: RoleApp, live: Mapping[str, Any], changes: tuple[FieldChange, ...]
) -> dict[str, Any]:
    """The PATCH body for ``changes``: only the changed top-level fields.

    A changed ``opts`` is sent whole, as live has it (minus server-owned keys) with the
    changed keys replaced: Era's PATCH may replace ``opts`` as a unit, and sending only
    the changed keys would then drop the keys this manifest leaves unmanaged.
    """
    body: dict[str, Any] = {}
    changed_opts = {c.path[5:] for c in changes if c.path.startswith("opts.")}
    for change in changes:
        if not change.path.startswith("opts."):
            body[change.path] = _copy(desired.fields[change.path])
    if changed_opts:
        live_opts = live.get("opts")
        live_opts = live_opts if isinstance(live_opts, Mapping) else {}
        opts = {k: _copy(v) for k, v in live_opts.items() if k not in SERVER_OWNED_OPTS}
        for key in sorted(changed_opts):
            opts[key] = _copy(desired.fields["opts"][key])
        body["opts"] = opts
    return body


def additions(body: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """A create's fields as changes from nothing, ``opts`` key by key, sorted by path."""
    changes: list[FieldChange] = []
    for key, value in body.items():
        if key == "id":
            continue
        if key == "opts" and isinstance(value, Mapping):
            changes.extend(field_change(f"opts.{k}", None, v) for k, v in value.items())
        else:
            changes.append(field_change(key, None, value))
    return tuple(sorted(changes, key=lambda c: c.path))


def field_change(path: str, before: Any, after: Any) -> FieldChange:
    """A FieldChange, marked sensitive when any part of its path names a secret."""
    return FieldChange(path=path, before=before, after=after, sensitive=_sensitive(path))


# Paths repeat across objects (every roleapp has ``title``, ``opts.tier``...): each is
# judged once, not once per object (1,000 creates: ~12 ms of a plan's CPU).
@functools.lru_cache(maxsize=4096)
def _sensitive(path: str) -> bool:
    return any(redaction.is_secret_key(part) for part in path.split("."))


def _unchanged(fields: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """True only when ``_project`` would give equal projections (nothing ignored).

    Why: nearly every object in a plan is unchanged, and building both projections costs
    twice what this walk does (10,000 unchanged roleapps: diff 85 -> 43 ms of CPU).
    One-sided: False means "not proven", and the projections decide.
    """
    for key, wanted in fields.items():
        if key in SERVER_OWNED_TOP:
            continue
        value = live.get(key, _MISSING)
        if key == "opts":
            if type(wanted) is not dict or type(value) is not dict:
                return False
            for opt, after in wanted.items():
                if opt not in SERVER_OWNED_OPTS and value.get(opt, _MISSING) != after:
                    return False
        elif key == "roles":
            if type(wanted) is not list or type(value) is not list:
                return False
            # Equal lists of strings project alike; anything else (1 == True, say, with
            # str() telling them apart) is left to the projection's sorted set.
            if value == wanted and _strings(value) and _strings(wanted):
                continue
            if sorted(set(value), key=str) != sorted(set(wanted), key=str):
                return False
        elif value != wanted:
            return False
    return True


def _strings(items: list[Any]) -> bool:
    # A loop, not all(genexpr): 0.13 against 0.56 us on a two-role list, twice per roleapp.
    for item in items:  # noqa: SIM110
        if type(item) is not str:
            return False
    return True


def _project(
    obj: Mapping[str, Any], fields: Mapping[str, Any], ignored: tuple[str, ...]
) -> dict[str, Any]:
    """``obj`` reduced to the keys ``fields`` manages, roles sorted, ignored paths dropped.

    Runs twice per declared roleapp in every plan, hence the plain ``dict`` checks before
    the ABC ones (an ``isinstance(x, Mapping)`` costs several times more) and no per-key
    string building unless some ``opts`` path is ignored.
    """
    projection: dict[str, Any] = {}
    for key, wanted in fields.items():
        if key in SERVER_OWNED_TOP or key in ignored:
            continue
        value = obj.get(key, _MISSING)
        if key == "opts" and _is_mapping(wanted):
            opts = value if _is_mapping(value) else {}
            if ignored:
                projection[key] = {
                    opt: opts.get(opt, _MISSING)
                    for opt in wanted
                    if opt not in SERVER_OWNED_OPTS and f"opts.{opt}" not in ignored
                }
            else:
                projection[key] = {
                    opt: opts.get(opt, _MISSING) for opt in wanted if opt not in SERVER_OWNED_OPTS
                }
        elif key == "roles" and (type(value) is list or isinstance(value, list | tuple)):
            # A set (order and repeats are not drift), kept as a sorted list for the output.
            projection[key] = sorted(set(value), key=str)
        else:
            projection[key] = value
    return projection


def _is_mapping(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)


def _copy(value: Any) -> Any:
    """A plain-JSON copy, so a payload in the plan never aliases the manifest's data."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value  # the common leaves, without asking the Mapping ABC
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value
