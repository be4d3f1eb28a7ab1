"""The drift report as Markdown, to post as a pull-request or issue comment.

Called through ``controller.rendering.drift.render_drift(report, "markdown")`` by the CLI
(``drift --format markdown``), typically from a scheduled CI job. Shape: a verdict and a
table of every count first, then ``<details>`` blocks: non-compliant backup policies (open),
one block per drifted roleapp with its field changes, then missing, orphaned, the other
(compliant, running, suspended) policies and unmanaged objects.

Why a size cap: forges refuse comments past 65,536 characters. The head (verdict and
counts) is always whole; blocks are added while they fit in ``MAX_CHARS``; past that the
report says it was summarised and counts what it left out (the JSON report has it all).
Each value is cut to ``VALUE_CHARS``, so no single row can blow the budget.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from controller import redaction
from controller.drifting import BackupDrift, DriftReport, ResourceDrift, ResourceStatus
from controller.plans import FieldChange
from controller.rendering import drift_text
from controller.rendering.jsondoc import format_time
from controller.rendering.markdown import escape

MAX_CHARS = 60_000
VALUE_CHARS = 300
UNMANAGED_SHOWN = 50
_BACKUP_HEADER = ("policy", "connection", "status", "last success", "age", "RPO", "reason")
# Kept free for the "summarised" note and the closing tags of the block being cut.
_RESERVED = 1_500


def render(report: DriftReport, *, color: bool = False) -> str:
    """``color`` is ignored: Markdown has none."""
    head = _head(report)
    budget = _Budget(MAX_CHARS - _size(head) - _RESERVED)
    omitted: Counter[str] = Counter()
    findings = [b for b in report.backups if b.failing]
    if findings:
        omitted["non-compliant policies"] += budget.table(
            f"{len(findings)} backup polic(y/ies) not compliant",
            _BACKUP_HEADER,
            [_backup_row(b) for b in findings],
            open_=True,
        )
    for item in (r for r in report.resources if r.status is ResourceStatus.DRIFTED):
        if budget.full:
            omitted["drifted"] += 1
            continue
        summary = f"drifted: <b>{_html(item.name or '')}</b> on {_html(item.connection)}"
        summary += f" ({_html(', '.join(c.path for c in item.changes) or item.note)})"
        if item.since is not None:
            summary += f", since {drift_text.format_time(item.since)}"
        rows = [_change_row(c) for c in item.changes]
        if item.note and item.changes:
            rows.append([escape(_html(item.note)), "", ""])
        if budget.block(summary, ["field", "live", "desired"], rows) is None:
            omitted["drifted"] += 1
    for status in (ResourceStatus.MISSING, ResourceStatus.ORPHANED):
        items = [r for r in report.resources if r.status is status]
        if items:
            omitted[status.value] += budget.table(
                f"{len(items)} {status.value} roleapp(s)",
                ["name", "connection", "id", "since", "note"],
                [_resource_row(r) for r in items],
            )
    others = [b for b in report.backups if not b.failing]
    if others:
        omitted["compliant, running or suspended policies"] += budget.table(
            f"{len(others)} compliant, running or suspended backup polic(y/ies)",
            _BACKUP_HEADER,
            [_backup_row(b) for b in others],
        )
    unmanaged = [r for r in report.resources if r.status is ResourceStatus.UNMANAGED]
    if unmanaged:
        rows = [_unmanaged_row(r) for r in unmanaged[:UNMANAGED_SHOWN]]
        not_listed = len(unmanaged) - len(rows)
        not_listed += budget.table(
            f"{len(unmanaged)} live roleapp(s) not managed by converge (reported, never deleted)",
            ["connection", "id", "title"],
            rows,
        )
        omitted["unmanaged"] += not_listed
    lines = [*head, *budget.lines, *_omitted_note(omitted)]
    return "\n".join(lines).rstrip("\n") + "\n"


class _Budget:
    """Lines added while they fit in ``limit`` characters; ``full`` once something did not."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[str] = []
        self.used = 0
        self.full = False

    def table(
        self,
        summary: str,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        open_: bool = False,
    ) -> int:
        """:meth:`block`, answering how many of ``rows`` are not shown."""
        missed = self.block(summary, header, rows, open_=open_)
        return len(rows) if missed is None else missed

    def block(
        self,
        summary: str,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        open_: bool = False,
    ) -> int | None:
        """A ``<details>`` block with as many ``rows`` as fit: how many did not (None: no block)."""
        start = [
            f"<details{' open' if open_ else ''}><summary>{summary}</summary>",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        end = ["", "</details>", ""]
        if self.full or self.used + _size(start) + _size(end) + 100 > self.limit:
            self.full = True
            return None
        block = list(start)
        used = self.used + _size(start) + _size(end) + 100  # 100: the "more rows" line
        shown = 0
        for row in rows:
            line = "| " + " | ".join(row) + " |"
            if used + len(line) + 1 > self.limit:
                self.full = True
                break
            block.append(line)
            used += len(line) + 1
            shown += 1
        if shown < len(rows):
            block += ["", f"_… {len(rows) - shown} more not shown._"]
        block += end
        self.lines += block
        self.used += _size(block)
        return len(rows) - shown


def _head(report: DriftReport) -> list[str]:
    counts = report.summary
    verdict = (
        "**No drift**: live state matches the manifests and every backup policy is compliant."
        if report.clean
        else "**Drift found**: live state differs from the manifests or a backup policy is not compliant."
    )
    return [
        "### converge drift",
        "",
        f"{verdict} Checked {format_time(report.checked)}.",
        "",
        "| " + " | ".join(counts) + " |",
        "|" + "---:|" * len(counts),
        "| " + " | ".join(str(n) for n in counts.values()) + " |",
        "",
    ]


def _omitted_note(omitted: Counter[str]) -> list[str]:
    left = {what: n for what, n in omitted.items() if n}
    if not left:
        return []
    listed = ", ".join(f"{n} {what}" for what, n in left.items())
    return [
        "",
        f"_This report was summarised to stay under {MAX_CHARS:,} characters: not shown in "
        f"detail: {listed}. The counts above are complete; see `converge drift --format json` "
        "for every object._",
    ]


def _change_row(change: FieldChange) -> list[str]:
    if change.sensitive:
        return [_cell(change.path), redaction.SENSITIVE_CHANGE, redaction.SENSITIVE_CHANGE]
    return [_cell(change.path), _cell(_value(change.before)), _cell(_value(change.after))]


def _resource_row(item: ResourceDrift) -> list[str]:
    return [
        _cell(item.name or ""),
        _cell(item.connection),
        _cell(item.id or ""),
        _cell(drift_text.format_time(item.since) if item.since else ""),
        _cell(item.note or (f"declared at {item.source}" if item.source else "")),
    ]


def _unmanaged_row(item: ResourceDrift) -> list[str]:
    return [_cell(item.connection), _cell(item.id or ""), _cell(item.title or "")]


def _backup_row(item: BackupDrift) -> list[str]:
    reason = item.reason
    if item.since is not None:
        reason += f" ({drift_text.since(item.status, item.since)})"
    return [
        _cell(item.name),
        _cell(item.connection),
        f"**{item.status.value}**",
        _cell(drift_text.format_time(item.last_success)),
        _cell(drift_text.format_seconds(item.age_seconds)),
        _cell(drift_text.format_seconds(item.max_age_seconds)),
        _cell(reason),
    ]


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _cell(text: str) -> str:
    """Cut, HTML-escaped (titles may hold ``</details>``), then made table-safe."""
    if len(text) > VALUE_CHARS:
        text = text[: VALUE_CHARS - 1] + "…"
    return escape(_html(text))


def _html(text: str) -> str:
    return html.escape(text, quote=False)


def _size(lines: Sequence[str]) -> int:
    return sum(len(line) + 1 for line in lines)
