"""The plan as Markdown, to post as a pull-request comment.

Called through ``controller.rendering.render_plan(plan, "markdown")`` by the CLI (``plan
--format markdown``), typically from a CI job that posts the output on the PR. Shape: a
summary table, guard violations, then one section per connection with a table of actions
and, per action with field changes, a table of them.

Why a size cap: forges refuse comments past 65,536 characters; past ``MAX_CHARS`` the
remaining actions are counted instead of shown (the JSON plan has them all).
"""

from __future__ import annotations

import json
from typing import Any

from controller import redaction
from controller.plans import Action, ActionKind, FieldChange, Plan
from controller.rendering import text

MAX_CHARS = 60_000
UNMANAGED_SHOWN = 50


def render(plan: Plan, *, color: bool = False) -> str:
    """``color`` is ignored: Markdown has none."""
    head: list[str] = ["### converge plan", ""]
    counts = plan.summary
    columns = [kind.value for kind in ActionKind] + ["unchanged"]
    head += [
        "| " + " | ".join(columns) + " |",
        "|" + "---:|" * len(columns),
        "| " + " | ".join(str(counts[c]) for c in columns) + " |",
        "",
    ]
    if not plan.has_changes:
        head += [text.NO_CHANGES, ""]
    if plan.guard_violations:
        head += ["**Refused by safety guards** (apply will not run):", ""]
        head += [f"- `{v.guard}`: {escape(v.message)}" for v in plan.guard_violations]
        head.append("")
    tail = _unmanaged(plan)
    # 300: room for the "more actions not shown" note that a cut adds.
    body = _sections(plan, budget=MAX_CHARS - _size(head) - _size(tail) - 300)
    return "\n".join([*head, *body, *tail]).rstrip("\n") + "\n"


def escape(value: str) -> str:
    """Safe inside a table cell: pipes and backticks escaped, newlines as <br>."""
    return (
        value.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("`", "\\`")
        .replace("\r\n", "<br>")
        .replace("\n", "<br>")
    )


def _sections(plan: Plan, *, budget: int) -> list[str]:
    """Per-connection tables, action by action until ``budget`` characters are used."""
    lines: list[str] = []
    used = 0
    shown = 0
    full = False

    def fits(more: list[str]) -> bool:
        nonlocal used, full
        full = full or used + _size(more) > budget
        if not full:
            lines.extend(more)
            used += _size(more)
        return not full

    for connection in sorted({a.ref.connection for a in plan.actions}):
        header = [f"#### {escape(connection)}", "", "| | action | object | id | reason | source |"]
        if not fits([*header, "|---|---|---|---|---|---|"]):
            break
        listed = [a for a in plan.actions if a.ref.connection == connection]
        rows = [a for a in listed if fits([_action_row(a)])]
        shown += len(rows)
        fits([""])
        for action in rows:
            if action.changes and not fits(_changes_table(action)):
                break
        if full:
            break
    if shown < len(plan.actions) or full:
        lines += [
            "",
            f"_… {len(plan.actions) - shown} more action(s) and some field changes not shown, "
            "to keep this comment short: see `converge plan --format json`._",
            "",
        ]
    return lines


def _action_row(action: Action) -> str:
    cells = [
        escape(text.SYMBOLS[action.kind]),
        f"**{action.kind.value}**",
        escape(f"{action.ref.kind} {action.ref.name}"),
        escape(action.id or ""),
        escape(action.reason),
        escape(action.source or ""),
    ]
    return "| " + " | ".join(cells) + " |"


def _changes_table(action: Action) -> list[str]:
    lines = [
        f"**{action.kind.value}** {escape(action.ref.kind)} {escape(action.ref.name)}:",
        "",
        "| field | before | after |",
        "|---|---|---|",
    ]
    lines += [_change_row(change) for change in action.changes]
    lines.append("")
    return lines


def _change_row(change: FieldChange) -> str:
    if change.sensitive:
        before = after = redaction.SENSITIVE_CHANGE
    else:
        before, after = _value(change.before), _value(change.after)
    return f"| {escape(change.path)} | {escape(before)} | {escape(after)} |"


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _unmanaged(plan: Plan) -> list[str]:
    if not plan.unmanaged:
        return []
    lines = [
        "<details><summary>"
        f"{len(plan.unmanaged)} live object(s) not managed by converge (never deleted)"
        "</summary>",
        "",
        "| connection | id | title |",
        "|---|---|---|",
    ]
    lines += [
        f"| {escape(u.connection)} | {escape(u.id)} | {escape(u.title)} |"
        for u in plan.unmanaged[:UNMANAGED_SHOWN]
    ]
    if len(plan.unmanaged) > UNMANAGED_SHOWN:
        lines.append(f"\n_… and {len(plan.unmanaged) - UNMANAGED_SHOWN} more._")
    lines += ["", "</details>", ""]
    return lines


def _size(lines: list[str]) -> int:
    return sum(len(line) + 1 for line in lines)
