"""Era's roleapp entity rules: defaults, type checks, server-owned fields, changes.

Pure functions used by ``era.py``; each returns a new entity and never changes its input
(the stored entities are shared read-only with listings in flight).

- Settable: ``folder`` (required, a non-empty string), ``title`` (str), ``roles`` (list of
  str), ``svcscriptcode`` (str), ``opts`` (object). Anything else the client sends, apart
  from ``id``, is an unknown field → 400/1400, so a client's typo is caught here rather
  than silently ignored.
- Server-owned: ``archive`` (the ``_links.self.href`` of the archive), ``ext.ct``,
  ``ext.lwt``, ``opts.attachment_info``. Sent by a client they are ignored, like the
  read-only fields of a real server, and the stored values kept.
- ``PATCH`` replaces each top-level field it names; ``opts`` is replaced whole except for
  ``opts.attachment_info``, which stays. Every write moves ``ext.lwt``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from controller.emulator import core

__all__ = ["edited", "new_entity", "patched", "seeded_entity", "with_attachment"]

_SETTABLE = ("folder", "title", "roles", "svcscriptcode", "opts")
_SERVER_OWNED = ("archive", "ext")
# Ids become a path segment: keep them to characters that need no escaping.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")


def archive_href(roleapp_id: str) -> str:
    return f"/rest/v1/domain/roleapps/{roleapp_id}/attachment"


def _defaults(roleapp_id: str, now: str) -> dict[str, Any]:
    # Key order as Era prints it: id, title, folder, archive, roles, svcscriptcode, opts, ext.
    return {
        "id": roleapp_id,
        "title": "",
        "folder": "",
        "archive": {"_links": {"self": {"href": archive_href(roleapp_id)}}},
        "roles": [],
        "svcscriptcode": "",
        "opts": {"title": "", "comment": ""},
        "ext": {"ct": now, "lwt": now},
    }


def _settable(body: Any) -> dict[str, Any]:
    """The settable fields of a create/patch body, type-checked."""
    if not isinstance(body, dict):
        raise core.BadRequest("the roleapp must be a JSON object")
    unknown = sorted(set(body) - {"id", *_SETTABLE, *_SERVER_OWNED})
    if unknown:
        raise core.BadRequest(f"unknown roleapp field(s): {', '.join(unknown)}")
    fields = {name: body[name] for name in _SETTABLE if name in body}
    for name in ("folder", "title", "svcscriptcode"):
        if name in fields and not isinstance(fields[name], str):
            raise core.BadRequest(f"{name} must be a string")
    if "folder" in fields and not fields["folder"]:
        raise core.BadRequest("folder must not be empty")
    roles = fields.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise core.BadRequest("roles must be a list of strings")
    if "opts" in fields:
        if not isinstance(fields["opts"], dict):
            raise core.BadRequest("opts must be an object")
        fields["opts"] = {k: v for k, v in fields["opts"].items() if k != "attachment_info"}
    return fields


def _copied(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars).

    Entities and bodies are JSON, never aliased or cyclic, so ``copy.deepcopy``'s memo and
    type dispatch buy nothing here; they cost several times this on every write.
    """
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value


def _checked_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise core.BadRequest(f"id must be a string of letters, digits, '-', '.', '_': {value!r}")
    return value


def new_entity(body: Any, *, now: str) -> dict[str, Any]:
    """The entity a create stores: the client's fields over the defaults; id kept if given."""
    fields = _settable(body)
    if "folder" not in fields:
        raise core.BadRequest("folder is required")
    roleapp_id = _checked_id(body["id"]) if body.get("id") is not None else str(uuid.uuid4())
    entity = _defaults(roleapp_id, now)
    entity.update(_copied(fields))
    return entity


def patched(entity: Mapping[str, Any], body: Any, *, now: str) -> dict[str, Any]:
    """``entity`` with the PATCH body's fields replaced and ``ext.lwt`` moved."""
    fields = _settable(body)
    if "id" in body and body["id"] != entity["id"]:
        raise core.BadRequest("id cannot be changed")
    result = _copied(dict(entity))
    for name, value in _copied(fields).items():
        if name == "opts" and "attachment_info" in result.get("opts", {}):
            value["attachment_info"] = result["opts"]["attachment_info"]
        result[name] = value
    result["ext"] = {**result.get("ext", {}), "lwt": now}
    return result


def with_attachment(
    entity: Mapping[str, Any], info: dict[str, Any] | None, *, now: str
) -> dict[str, Any]:
    """``entity`` with ``opts.attachment_info`` set (or removed when ``info`` is None)."""
    result = _copied(dict(entity))
    opts = result.setdefault("opts", {})
    if info is None:
        opts.pop("attachment_info", None)
    else:
        opts["attachment_info"] = info
    result["ext"] = {**result.get("ext", {}), "lwt": now}
    return result


def seeded_entity(raw: Any, *, now: str) -> dict[str, Any]:
    """A seeded entity: taken as given (server-owned fields too), with the gaps filled."""
    if not isinstance(raw, dict):
        raise core.BadRequest("each seeded roleapp must be an object")
    roleapp_id = _checked_id(raw["id"]) if raw.get("id") is not None else str(uuid.uuid4())
    entity = _defaults(roleapp_id, now)
    given = _copied(raw)
    entity["ext"].update(given.pop("ext", None) or {})
    entity.update(given)
    entity["id"] = roleapp_id
    return entity


def edited(entity: Mapping[str, Any], fields: Mapping[str, Any], *, now: str) -> dict[str, Any]:
    """A human's direct change: dotted keys set nested values; ``ext.lwt`` moves unless set."""
    result = _copied(dict(entity))
    for dotted, value in fields.items():
        parts = str(dotted).split(".")
        if parts[0] == "id":
            raise core.BadRequest("id cannot be changed")
        target = result
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        target[parts[-1]] = _copied(value)
    if "ext.lwt" not in fields:
        result["ext"] = {**result.get("ext", {}), "lwt": now}
    return result
