"""The drift report for a terminal, a CI log or a cron mail: two tables and a verdict.

Called through ``controller.rendering.drift.render_drift(report, "text", color=...)`` by
the CLI. Pure: ``color`` comes from the CLI (terminal, ``--no-color``, ``NO_COLOR``);
without it there is no escape code at all.

Shape: a roleapp table of every finding (drifted, missing, orphaned) with each changed field
below its row as ``path: live … → desired …``; in-sync objects counted, not listed (a fleet
has thousands; ``--format json`` lists them); unmanaged objects listed up to
``UNMANAGED_SHOWN``; a table of every backup policy; one summary line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime

from controller import durations, redaction
from controller.drifting import BackupDrift, DriftReport, ResourceDrift, ResourceStatus
from controller.plans import FieldChange
from controller.policies import PolicyState
from controller.rendering.text import format_value

UNMANAGED_SHOWN = 20
# Longest value shown in a change line: a 100 KB title would drown the table.
VALUE_CHARS = 200
# A live title is anyone's text: an escape sequence in it must not drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
CLEAN = "No drift: live state matches the manifests and every backup policy is compliant."

_COLORS = {
    ResourceStatus.DRIFTED: "33",  # yellow
    ResourceStatus.MISSING: "31",  # red
    ResourceStatus.ORPHANED: "31",
    ResourceStatus.UNMANAGED: "36",  # cyan
    ResourceStatus.IN_SYNC: "32",  # green
    PolicyState.COMPLIANT: "32",
    PolicyState.OVERDUE: "31",
    PolicyState.FAILING: "31",
    PolicyState.NEVER: "31",
    PolicyState.RUNNING: "34",  # blue
    PolicyState.SUSPENDED: "2",  # dim
}

Paint = Callable[[str, str], str]


def render(report: DriftReport, *, color: bool = False) -> str:
    paint = _painter(color)
    lines: list[str] = []
    findings = [r for r in report.resources if r.failing]
    in_sync = [r for r in report.resources if r.status is ResourceStatus.IN_SYNC]
    unmanaged = [r for r in report.resources if r.status is ResourceStatus.UNMANAGED]
    if findings or in_sync:
        lines.append(paint("1", "Roleapps"))
        if findings:
            lines.extend(_findings_table(findings, paint))
        lines.append(f"  {len(in_sync)} in sync.")
        lines.append("")
    if unmanaged:
        lines.append(
            f"{len(unmanaged)} live roleapp(s) not managed by converge (reported, never deleted):"
        )
        for item in unmanaged[:UNMANAGED_SHOWN]:
            title = _CONTROL.sub("\ufffd", item.title or "")
            lines.append(f"  ? {item.connection}  {item.id}  {title}".rstrip())
        if len(unmanaged) > UNMANAGED_SHOWN:
            lines.append(f"  ... and {len(unmanaged) - UNMANAGED_SHOWN} more (--format json)")
        lines.append("")
    if report.backups:
        lines.append(paint("1", "Backup policies"))
        lines.extend(_backups_table(report.backups, paint))
        lines.append("")
    lines.append(summary_line(report))
    if report.clean:
        lines.append(CLEAN)
    return "\n".join(lines) + "\n"


def summary_line(report: DriftReport) -> str:
    counts = report.summary
    roleapps = ", ".join(
        f"{counts[s]} {s.replace('_', ' ')}"
        for s in ("drifted", "missing", "orphaned", "in_sync", "unmanaged")
    )
    backups = ", ".join(f"{counts[s.value]} {s.value}" for s in PolicyState)
    return f"Drift: {roleapps}; backup policies: {backups}."


def format_change(change: FieldChange) -> str:
    if change.sensitive:
        return f"{change.path}: {redaction.SENSITIVE_CHANGE}"
    return f"{change.path}: live {_short(change.before)} → desired {_short(change.after)}"


def format_time(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment is not None else "-"


def format_seconds(seconds: float | None) -> str:
    return durations.humanize(seconds) if seconds is not None else "-"


def _findings_table(items: Sequence[ResourceDrift], paint: Paint) -> list[str]:
    rows = [
        [
            item.status.value,
            item.connection,
            item.name or "",
            item.id or "",
            since(item.status, item.since),
        ]
        for item in items
    ]
    header = ["STATUS", "CONNECTION", "NAME", "ID", "SINCE"]
    widths = _widths([header, *rows])
    lines = [f"  {_row(header, widths)}".rstrip()]
    for item, row in zip(items, rows, strict=True):
        cells = _row(row, widths)
        status = row[0].ljust(widths[0])
        lines.append(f"  {paint(_COLORS[item.status], status)}{cells[len(status) :]}".rstrip())
        details = [format_change(c) for c in item.changes]
        if item.note:
            details.append(item.note)
        if item.source:
            details.append(f"declared at {item.source}")
        lines.extend(f"      {detail}" for detail in details)
    return lines


def _backups_table(items: Sequence[BackupDrift], paint: Paint) -> list[str]:
    rows = [
        [
            item.status.value,
            item.connection,
            item.name,
            format_time(item.last_success),
            format_seconds(item.age_seconds),
            format_seconds(item.max_age_seconds),
            since(item.status, item.since),
        ]
        for item in items
    ]
    header = ["STATUS", "CONNECTION", "POLICY", "LAST SUCCESS", "AGE", "RPO", "SINCE"]
    widths = _widths([header, *rows])
    lines = [f"  {_row(header, widths)}".rstrip()]
    for item, row in zip(items, rows, strict=True):
        cells = _row(row, widths)
        status = row[0].ljust(widths[0])
        lines.append(f"  {paint(_COLORS[item.status], status)}{cells[len(status) :]}".rstrip())
        if item.status is not PolicyState.COMPLIANT:
            lines.append(f"      {item.reason}")
    return lines


def since(status: str, moment: datetime | None) -> str:
    """``drifted since 2026-11-23 10:00Z`` (``overdue since``, ...); empty without history."""
    return f"{status} since {format_time(moment)}" if moment is not None else ""


def _short(value: object) -> str:
    text = format_value(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _widths(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))


def _painter(color: bool) -> Paint:
    if not color:
        return lambda _code, text: text
    return lambda code, text: f"\x1b[{code}m{text}\x1b[0m"
