"""The plan for a terminal or a CI log, Terraform-like.

Called through ``controller.rendering.render_plan(plan, "text", color=...)`` by the CLI
(``plan``, and ``apply`` before it asks). Pure: ``color`` comes from the CLI, which knows
about terminals, ``--no-color`` and ``NO_COLOR``; without it there is no escape code at all.

Shape: one block per connection (sorted), each action as ``<symbol> <action> <kind>
<name>`` with its id, reason and source, then its field changes indented as
``path: before → after``; guard violations and unmanaged objects after; one summary line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from controller import redaction
from controller.plans import Action, ActionKind, FieldChange, Plan

SYMBOLS = {
    ActionKind.CREATE: "+",
    ActionKind.UPDATE: "~",
    ActionKind.DELETE: "-",
    ActionKind.ADOPT: "<=",
    ActionKind.ARCHIVE: "^",
    ActionKind.BACKUP: "*",
    ActionKind.EXPIRE: "x",
}
_COLORS = {
    ActionKind.CREATE: "32",  # green
    ActionKind.UPDATE: "33",  # yellow
    ActionKind.DELETE: "31",  # red
    ActionKind.ADOPT: "36",  # cyan
    ActionKind.ARCHIVE: "34",  # blue
    ActionKind.BACKUP: "35",  # magenta
    ActionKind.EXPIRE: "31",
}
# How many unmanaged objects to list by name: a fleet can have thousands, and the plan
# is about changes; `drift` and the JSON plan list them all.
UNMANAGED_SHOWN = 20
NO_CHANGES = "No changes. Live state matches the manifests."


def render(plan: Plan, *, color: bool = False) -> str:
    paint = _painter(color)
    lines: list[str] = []
    connections = sorted({action.ref.connection for action in plan.actions})
    for connection in connections:
        lines.append(paint("1", connection))
        for action in plan.actions:
            if action.ref.connection == connection:
                lines.extend(_action_lines(action, paint))
        lines.append("")
    if plan.guard_violations:
        lines.append(paint("1;31", "Refused by safety guards (apply will not run):"))
        lines.extend(f"  ! {v.guard}: {v.message}" for v in plan.guard_violations)
        lines.append("")
    if plan.unmanaged:
        lines.append(
            f"{len(plan.unmanaged)} live object(s) not managed by converge (never deleted):"
        )
        for item in plan.unmanaged[:UNMANAGED_SHOWN]:
            lines.append(f"  ? {item.connection}  {item.id}  {item.title}".rstrip())
        if len(plan.unmanaged) > UNMANAGED_SHOWN:
            lines.append(f"  ... and {len(plan.unmanaged) - UNMANAGED_SHOWN} more")
        lines.append("")
    lines.append(summary_line(plan) if plan.has_changes else NO_CHANGES)
    return "\n".join(lines) + "\n"


def summary_line(plan: Plan) -> str:
    counts = plan.summary
    verbs = {
        ActionKind.CREATE: "to create",
        ActionKind.UPDATE: "to update",
        ActionKind.DELETE: "to delete",
        ActionKind.ADOPT: "to adopt",
        ActionKind.ARCHIVE: "to archive",
        ActionKind.BACKUP: "to back up",
        ActionKind.EXPIRE: "to expire",
    }
    parts = ", ".join(f"{counts[kind.value]} {verb}" for kind, verb in verbs.items())
    return f"Plan: {parts}; {plan.unchanged} unchanged."


def format_value(value: Any) -> str:
    """JSON for values (strings quoted, so `""` and `null` are visible), Cyrillic kept as is."""
    # Why the shortcuts: a plan of 1,000 creates formats ~12,000 scalars, and json.dumps
    # builds an encoder for each (~4 µs). These are the very functions it ends up calling.
    if type(value) is str:
        return encode_basestring(value)
    if value is None or type(value) is bool:
        return _JSON_CONSTANTS[value]
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


_JSON_CONSTANTS = {None: "null", True: "true", False: "false"}


def format_change(change: FieldChange) -> str:
    if change.sensitive:
        return f"{change.path}: {redaction.SENSITIVE_CHANGE}"
    return f"{change.path}: {format_value(change.before)} → {format_value(change.after)}"


def _action_lines(action: Action, paint: Callable[[str, str], str]) -> list[str]:
    head = f"{SYMBOLS[action.kind]} {action.kind.value} {action.ref.kind} {action.ref.name}"
    if action.id:
        head += f"  ({action.id})"
    where = f"  [{action.source}]" if action.source else ""
    lines = [f"  {paint(_COLORS[action.kind], head)}", f"      {action.reason}{where}"]
    lines.extend(f"        {format_change(change)}" for change in action.changes)
    return lines


def _painter(color: bool) -> Callable[[str, str], str]:
    if not color:
        return lambda _code, text: text
    return lambda code, text: f"\x1b[{code}m{text}\x1b[0m"
