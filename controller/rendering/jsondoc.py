"""The plan as JSON: cli.md's versioned contract, and the ``plan --out FILE`` format.

Called through ``controller.rendering.render_plan(plan, "json")`` by the CLI (``plan
--format json`` and ``--out``); ``load_plan`` is called by ``apply --plan FILE``. The
document is validated in tests against ``schemas/plan.schema.json``.

Beyond cli.md's keys (all kept as written), each action carries what applying needs
(``desired``, ``patch``, ``archive``, ``backup_id``), and the document carries
``fingerprints``, ``managed``, ``forget``, ``unmanaged`` and ``guard_violations``, so a
re-loaded plan equals the one that was saved.

Secrets: a sensitive change renders as ``(sensitive, changed)`` and so does any payload
value under a secret key. Such a plan can be shown but not re-loaded for applying
(``load_plan`` refuses it): the values it would need were never written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controller import redaction
from controller.errors import ConvergeError
from controller.plans import (
    PLAN_FORMAT,
    Action,
    ActionKind,
    ArchiveUpload,
    FieldChange,
    GuardViolation,
    Managed,
    Plan,
    Ref,
    Unmanaged,
)


def render(plan: Plan, *, color: bool = False) -> str:
    """The plan as a JSON document, keys sorted. ``color`` is ignored: JSON has none."""
    return json.dumps(to_document(plan), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def to_document(plan: Plan) -> dict[str, Any]:
    return {
        "format": plan.format,
        "created": format_time(plan.created),
        "summary": plan.summary,
        "actions": [_action(action) for action in plan.actions],
        "fingerprints": dict(plan.fingerprints),
        "managed": [
            {"ref": str(m.ref), "id": m.id, "prevent_destroy": m.prevent_destroy}
            for m in plan.managed
        ],
        "forget": [str(ref) for ref in plan.forget],
        "unmanaged": [u._asdict() for u in plan.unmanaged],
        "guard_violations": [
            {"ref": str(v.ref), "guard": v.guard, "message": v.message}
            for v in plan.guard_violations
        ],
    }


def format_time(moment: datetime) -> str:
    """``2026-11-23T10:00:00Z``; a naive datetime is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _action(action: Action) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "action": action.kind.value,
        "kind": action.ref.kind,
        "name": action.ref.name,
        "connection": action.ref.connection,
        "reason": action.reason,
        "changes": [_change(change) for change in action.changes],
    }
    optional = {
        "id": action.id,
        "source": action.source,
        "fingerprint": action.fingerprint,
        "backup_id": action.backup_id,
    }
    doc.update({key: value for key, value in optional.items() if value is not None})
    if action.desired is not None:
        doc["desired"] = _masked(action.desired)
    if action.patch is not None:
        doc["patch"] = _masked(action.patch)
    if action.archive is not None:
        doc["archive"] = {"path": action.archive.path, "md5": action.archive.md5}
    return doc


def _change(change: FieldChange) -> dict[str, Any]:
    if change.sensitive:
        return {
            "path": change.path,
            "before": redaction.SENSITIVE_CHANGE,
            "after": redaction.SENSITIVE_CHANGE,
            "sensitive": True,
        }
    return {"path": change.path, "before": change.before, "after": change.after}


def _masked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: redaction.SENSITIVE_CHANGE if redaction.is_secret_key(str(key)) else _masked(v)
            for key, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def load_plan(text: str) -> Plan:
    """A plan saved by ``render(plan)`` (``plan --out FILE``), for ``apply --plan FILE``.

    Raises ConvergeError (exit 1) naming what is wrong: not JSON, another format or
    version, a missing key, or a plan whose payloads had secrets masked out.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConvergeError(f"the plan file is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ConvergeError(f"not a {PLAN_FORMAT} plan file (format: {found!r})")
    try:
        return _plan(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConvergeError(f"the plan file is damaged: {type(exc).__name__}: {exc}") from exc


def _plan(doc: dict[str, Any]) -> Plan:
    created = datetime.strptime(doc["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return Plan(
        format=doc["format"],
        created=created,
        actions=tuple(_load_action(a) for a in doc["actions"]),
        unchanged=int(doc["summary"]["unchanged"]),
        fingerprints=dict(doc.get("fingerprints", {})),
        managed=tuple(
            Managed(ref=Ref.parse(m["ref"]), id=m["id"], prevent_destroy=m["prevent_destroy"])
            for m in doc.get("managed", [])
        ),
        forget=tuple(Ref.parse(ref) for ref in doc.get("forget", [])),
        unmanaged=tuple(
            Unmanaged(u["connection"], u["id"], u["title"]) for u in doc.get("unmanaged", [])
        ),
        guard_violations=tuple(
            GuardViolation(ref=Ref.parse(v["ref"]), guard=v["guard"], message=v["message"])
            for v in doc.get("guard_violations", [])
        ),
    )


def _load_action(doc: dict[str, Any]) -> Action:
    ref = Ref(doc["kind"], doc["connection"], doc["name"])
    for key in ("desired", "patch"):
        if key in doc and _has_masked(doc[key]):
            raise ConvergeError(
                f"{ref}: the plan file's {key} payload had secret values masked out; "
                "apply from the manifests instead of a saved plan"
            )
    archive = doc.get("archive")
    return Action(
        kind=ActionKind(doc["action"]),
        ref=ref,
        reason=doc["reason"],
        id=doc.get("id"),
        changes=tuple(
            FieldChange(
                path=c["path"],
                before=c["before"],
                after=c["after"],
                sensitive=bool(c.get("sensitive", False)),
            )
            for c in doc.get("changes", [])
        ),
        source=doc.get("source"),
        fingerprint=doc.get("fingerprint"),
        desired=doc.get("desired"),
        patch=doc.get("patch"),
        archive=ArchiveUpload(path=archive["path"], md5=archive["md5"]) if archive else None,
        backup_id=doc.get("backup_id"),
    )


def _has_masked(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(
            (redaction.is_secret_key(str(k)) and v == redaction.SENSITIVE_CHANGE) or _has_masked(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_has_masked(v) for v in value)
    return False
