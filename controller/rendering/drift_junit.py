"""The drift report as JUnit XML, so CI shows drift as failed tests.

Called through ``controller.rendering.drift.render_drift(report, "junit")`` by the CLI
(``drift --format junit --output drift.xml``), for CI systems that read test reports.

One ``<testsuite>`` for roleapps and one for backup policies; one ``<testcase>`` per
resource and per policy. Drifted, missing and orphaned roleapps and overdue, failing and
never-backed-up policies are ``<failure>``s whose message names each changed field with
its live and desired value. Unmanaged roleapps and suspended policies are ``<skipped>``:
reported, not failed (the same rule as the exit code). Built with ``xml.etree``, so every
value is escaped; characters XML 1.0 cannot carry at all become U+FFFD.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from controller.drifting import BackupDrift, DriftReport, ResourceDrift, ResourceStatus
from controller.policies import PolicyState
from controller.rendering import drift_text
from controller.rendering.jsondoc import format_time

# Control characters other than tab, newline and carriage return, lone surrogates, and
# U+FFFE/U+FFFF: not allowed in XML 1.0 even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MEANING = {
    ResourceStatus.DRIFTED: "live differs from the manifest",
    ResourceStatus.MISSING: "declared in git, not live",
    ResourceStatus.ORPHANED: "managed by converge, manifest removed",
}
# A message attribute is one line in most CI views; the element text has the whole story.
MESSAGE_CHARS = 1_000


def render(report: DriftReport, *, color: bool = False) -> str:
    """``color`` is ignored: XML has none."""
    timestamp = format_time(report.checked)
    root = ET.Element("testsuites", name="converge drift")
    suites = [
        _suite("converge.drift.roleapps", [_resource_case(r) for r in report.resources], timestamp),
        _suite("converge.drift.backups", [_backup_case(b) for b in report.backups], timestamp),
    ]
    for suite in suites:
        root.append(suite)
    for counter in ("tests", "failures", "errors", "skipped"):
        root.set(counter, str(sum(int(s.get(counter, "0")) for s in suites)))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _suite(name: str, cases: Sequence[ET.Element], timestamp: str) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.find("failure") is not None)),
        errors="0",
        skipped=str(sum(1 for c in cases if c.find("skipped") is not None)),
        timestamp=timestamp,
    )
    suite.extend(cases)
    return suite


def _resource_case(item: ResourceDrift) -> ET.Element:
    name = item.name if item.name is not None else f"(unmanaged) {item.id}"
    case = _case(f"converge.drift.{item.kind}.{item.connection}", name)
    if item.status is ResourceStatus.UNMANAGED:
        _child(case, "skipped", f"unmanaged: live, never managed by converge: {item.title or ''}")
    elif item.failing:
        changes = [drift_text.format_change(c) for c in item.changes]
        headline = f"{item.status}: " + ("; ".join(changes) or item.note or _MEANING[item.status])
        details = [f"{item.kind}/{item.connection}/{item.name} ({item.id}): {item.status}"]
        details += changes
        details += [line for line in (item.note, _where(item.source)) if line]
        if item.since is not None:
            details.append(drift_text.since(item.status, item.since))
        _child(case, "failure", headline, type_=item.status.value, text="\n".join(details))
    return case


def _backup_case(item: BackupDrift) -> ET.Element:
    case = _case(f"converge.drift.BackupPolicy.{item.connection}", item.name)
    if item.status is PolicyState.SUSPENDED:
        _child(case, "skipped", f"suspended: {item.reason}")
    elif item.failing:
        details = [
            f"BackupPolicy/{item.connection}/{item.name}: {item.status}: {item.reason}",
            f"last success: {drift_text.format_time(item.last_success)}",
            f"age: {drift_text.format_seconds(item.age_seconds)}",
            f"RPO (max age): {drift_text.format_seconds(item.max_age_seconds)}",
        ]
        details += [line for line in (_where(item.source),) if line]
        if item.since is not None:
            details.append(drift_text.since(item.status, item.since))
        _child(
            case,
            "failure",
            f"{item.status}: {item.reason}",
            type_=item.status.value,
            text="\n".join(details),
        )
    else:
        # Compliant or running: passed, with the facts a person looking at CI may want.
        out = ET.SubElement(case, "system-out")
        out.text = _clean(f"{item.status}: {item.reason}")
    return case


def _case(classname: str, name: str) -> ET.Element:
    return ET.Element("testcase", classname=_clean(classname), name=_clean(name), time="0")


def _child(
    case: ET.Element, tag: str, message: str, *, type_: str | None = None, text: str | None = None
) -> None:
    message = _clean(message)
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 1] + "…"
    element = ET.SubElement(case, tag, message=message)
    if type_ is not None:
        element.set("type", type_)
    if text is not None:
        element.text = _clean(text)


def _where(source: str | None) -> str:
    return f"declared at {source}" if source else ""


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
