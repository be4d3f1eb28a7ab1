"""The drift report as JSON: cli.md's ``converge.drift/v1`` contract.

Called through ``controller.rendering.drift.render_drift(report, "json")`` by the CLI
(``drift --format json``), typically by scripts and monitoring. Validated in tests against
``schemas/drift.schema.json``. Every key cli.md shows is kept as written; additions:
``summary.orphaned``, and per item ``since`` (first seen drifting), ``source``, ``note``,
``reason`` and ``message``. Every declared roleapp and every unmanaged one is listed.

Secrets: a sensitive change shows ``(sensitive, changed)`` for both values.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from controller import redaction
from controller.drifting import BackupDrift, DriftReport, ResourceDrift
from controller.plans import FieldChange
from controller.rendering.jsondoc import format_time


def render(report: DriftReport, *, color: bool = False) -> str:
    """The report as a JSON document, keys sorted. ``color`` is ignored: JSON has none."""
    return json.dumps(to_document(report), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def to_document(report: DriftReport) -> dict[str, Any]:
    return {
        "format": report.format,
        "checked": format_time(report.checked),
        "summary": report.summary,
        "resources": [_resource(r) for r in report.resources],
        "backups": [_backup(b) for b in report.backups],
    }


def change(item: FieldChange) -> dict[str, Any]:
    if item.sensitive:
        return {
            "path": item.path,
            "live": redaction.SENSITIVE_CHANGE,
            "desired": redaction.SENSITIVE_CHANGE,
            "sensitive": True,
        }
    return {"path": item.path, "live": item.before, "desired": item.after}


def _resource(item: ResourceDrift) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": item.kind,
        "name": item.name,
        "connection": item.connection,
        "id": item.id,
        "status": item.status.value,
    }
    if item.changes:
        doc["changes"] = [change(c) for c in item.changes]
    elif item.status == "drifted":
        doc["changes"] = []
    if item.title is not None:
        doc["title"] = item.title
    optional = {"source": item.source, "note": item.note, "since": _time(item.since)}
    doc.update({key: value for key, value in optional.items() if value})
    return doc


def _backup(item: BackupDrift) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": item.name,
        "connection": item.connection,
        "status": item.status.value,
        "last_success": _time(item.last_success),
        "age_seconds": _seconds(item.age_seconds),
        "max_age_seconds": _seconds(item.max_age_seconds),
        "reason": item.reason,
    }
    optional = {"source": item.source, "message": item.message, "since": _time(item.since)}
    doc.update({key: value for key, value in optional.items() if value})
    return doc


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


def _seconds(value: float | None) -> int | None:
    # Whole seconds: the contract's example is an integer, and sub-second ages mean nothing here.
    return int(value) if value is not None else None
