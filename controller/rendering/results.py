"""An apply's outcome for people and for scripts: one line per action, then a summary.

Called by the CLI after ``apply``. Pure: ``render_report(report, fmt)``. The JSON form
(``converge.apply/v1``) lists every action with its outcome and message, so a pipeline can
tell exactly what went through and what did not.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from controller.applying import ActionResult, ApplyReport, Outcome, Progress
from controller.rendering.text import SYMBOLS

APPLY_FORMAT = "converge.apply/v1"
_MARKS = {Outcome.SUCCEEDED: "ok", Outcome.FAILED: "FAILED", Outcome.SKIPPED: "skipped"}


def describe(result: ActionResult) -> str:
    action = result.action
    mark = _MARKS[result.outcome]
    text = f"{SYMBOLS[action.kind]} {action.kind} {action.ref}: {mark}"
    return f"{text}: {result.message}" if result.message else text


def progress_line(progress: Progress) -> str:
    """A plain line per finished action (CI logs); started actions print nothing."""
    assert progress.result is not None
    return f"[{progress.done}/{progress.total}] {describe(progress.result)}"


def render_text(report: ApplyReport) -> str:
    counts = {o: report.count(o) for o in Outcome}
    summary = (
        f"Apply complete: {counts[Outcome.SUCCEEDED]} succeeded, {counts[Outcome.FAILED]} failed, "
        f"{counts[Outcome.SKIPPED]} skipped."
    )
    if not report.failed:
        return summary
    lines = [describe(r) for r in report.results if r.outcome is not Outcome.SUCCEEDED]
    return "\n".join(["Failed actions:", *(f"  {line}" for line in lines), summary])


def render_json(report: ApplyReport, *, finished: datetime | None = None) -> str:
    document = {
        "format": APPLY_FORMAT,
        "finished": (finished or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "summary": {o.value: report.count(o) for o in Outcome},
        "results": [
            {
                "action": r.action.kind.value,
                "kind": r.action.ref.kind,
                "connection": r.action.ref.connection,
                "name": r.action.ref.name,
                "id": r.action.id,
                "outcome": r.outcome.value,
                "message": r.message,
                "seconds": round(r.seconds, 3),
            }
            for r in report.results
        ],
    }
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)
