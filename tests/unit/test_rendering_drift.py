"""Drift report rendering: every format, the JSON contract, JUnit counts, the Markdown cap, secrets."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from controller.drifting import BackupDrift, DriftReport, ResourceDrift, ResourceStatus
from controller.plans import FieldChange
from controller.policies import PolicyState
from controller.rendering import drift_markdown
from controller.rendering.drift import DRIFT_RENDERERS, render_drift

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "drift.schema.json").read_text(encoding="utf-8")
)
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
SINCE = datetime(2026, 11, 21, 8, 30, 0, tzinfo=UTC)
SECRET = "s3cr3t-do-not-show"
FORMATS = sorted(DRIFT_RENDERERS)
H = 3600


def resource(name: str | None, status: ResourceStatus, **kwargs: object) -> ResourceDrift:
    return ResourceDrift(
        kind="RoleApp",
        connection="era-main",
        name=name,
        id=kwargs.pop("id", f"id-{name}"),  # type: ignore[arg-type]
        status=status,
        **kwargs,  # type: ignore[arg-type]
    )


def policy(name: str, status: PolicyState, **kwargs: object) -> BackupDrift:
    fields: dict[str, object] = {
        "name": name,
        "connection": "element-main",
        "status": status,
        "reason": f"{status} reason",
        "last_success": NOW - timedelta(hours=30),
        "age_seconds": 30.0 * H,
        "max_age_seconds": 26.0 * H,
        "source": "manifests/backups.yaml:1",
    }
    fields.update(kwargs)
    return BackupDrift(**fields)  # type: ignore[arg-type]


def full_report() -> DriftReport:
    return DriftReport(
        checked=NOW,
        resources=(
            resource(
                "chat-operator",
                ResourceStatus.DRIFTED,
                changes=(
                    FieldChange(
                        path="opts.password", before=SECRET, after=SECRET + "2", sensitive=True
                    ),
                    FieldChange(path="roles", before=["x"], after=["chatagent"]),
                    FieldChange(path="title", before="First <app> | `x`", after="АРМ оператора"),
                ),
                source="manifests/era.yaml:12",
                since=SINCE,
            ),
            resource("gone", ResourceStatus.MISSING, source="manifests/era.yaml:30", since=NOW),
            resource("in-sync", ResourceStatus.IN_SYNC, source="manifests/era.yaml:40"),
            resource("old", ResourceStatus.ORPHANED, note="manifest removed", since=NOW),
            resource(None, ResourceStatus.UNMANAGED, id="u-1", title="Someone's app & <b>\x07</b>"),
        ),
        backups=(
            policy("compliant", PolicyState.COMPLIANT, age_seconds=2.0 * H),
            policy("crm", PolicyState.OVERDUE, since=SINCE),
            policy("failing", PolicyState.FAILING, message="disk full"),
            policy("never", PolicyState.NEVER, last_success=None, age_seconds=None),
            policy("running", PolicyState.RUNNING),
            policy("suspended", PolicyState.SUSPENDED),
        ),
    )


def clean_report() -> DriftReport:
    return DriftReport(
        checked=NOW,
        resources=(
            resource("a", ResourceStatus.IN_SYNC),
            resource(None, ResourceStatus.UNMANAGED, id="u", title="t"),
        ),
        backups=(policy("p", PolicyState.COMPLIANT), policy("s", PolicyState.SUSPENDED)),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_shows_findings_and_hides_secrets(fmt: str) -> None:
    text = render_drift(full_report(), fmt)
    assert SECRET not in text
    assert "(sensitive, changed)" in text
    for expected in ("chat-operator", "chatagent", "gone", "crm", "never", "u-1"):
        assert expected in text, (fmt, expected)
    assert "\x1b[" not in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_a_clean_report(fmt: str) -> None:
    text = render_drift(clean_report(), fmt)
    if fmt == "json":
        assert json.loads(text)["summary"]["drifted"] == 0
    elif fmt == "junit":
        assert ET.fromstring(text).get("failures") == "0"
    else:
        assert "No drift" in text


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown drift format"):
        render_drift(full_report(), "yaml")


def test_json_contract() -> None:
    doc = json.loads(render_drift(full_report(), "json"))
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert doc["format"] == "converge.drift/v1"
    assert doc["checked"] == "2026-11-23T10:00:00Z"
    assert doc["summary"] == {
        "in_sync": 1,
        "drifted": 1,
        "missing": 1,
        "unmanaged": 1,
        "compliant": 1,
        "overdue": 1,
        "running": 1,
        "failing": 1,
        "never": 1,
        "suspended": 1,
        "orphaned": 1,
    }
    drifted = doc["resources"][0]
    assert drifted["status"] == "drifted"
    assert drifted["since"] == "2026-11-21T08:30:00Z"
    assert drifted["changes"][1] == {"path": "roles", "live": ["x"], "desired": ["chatagent"]}
    assert drifted["changes"][0]["live"] == "(sensitive, changed)"
    unmanaged = doc["resources"][-1]
    assert unmanaged["name"] is None
    assert unmanaged["status"] == "unmanaged"
    assert unmanaged["title"].startswith("Someone's app")
    crm = next(b for b in doc["backups"] if b["name"] == "crm")
    assert crm == {
        "name": "crm",
        "connection": "element-main",
        "status": "overdue",
        "last_success": "2026-11-22T04:00:00Z",
        "age_seconds": 108000,
        "max_age_seconds": 93600,
        "reason": "overdue reason",
        "since": "2026-11-21T08:30:00Z",
        "source": "manifests/backups.yaml:1",
    }
    never = next(b for b in doc["backups"] if b["name"] == "never")
    assert never["last_success"] is None and never["age_seconds"] is None


def test_json_clean_report_validates() -> None:
    doc = json.loads(render_drift(clean_report(), "json"))
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_junit_counts_and_failures() -> None:
    root = ET.fromstring(render_drift(full_report(), "junit"))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("11", "6", "2")
    roleapps, backups = root.findall("testsuite")
    assert (roleapps.get("tests"), roleapps.get("failures")) == ("5", "3")
    assert (backups.get("tests"), backups.get("failures")) == ("6", "3")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    failure = cases["chat-operator"].find("failure")
    assert failure is not None
    assert failure.get("type") == "drifted"
    message = failure.get("message") or ""
    assert 'roles: live ["x"] → desired ["chatagent"]' in message
    assert "opts.password: (sensitive, changed)" in message
    assert "drifted since 2026-11-21 08:30Z" in (failure.text or "")
    assert cases["in-sync"].find("failure") is None
    assert cases["(unmanaged) u-1"].find("skipped") is not None
    assert cases["running"].find("failure") is None
    assert cases["suspended"].find("skipped") is not None
    overdue = cases["crm"].find("failure")
    assert overdue is not None and "RPO (max age): 26h" in (overdue.text or "")


def test_junit_clean_report_has_no_failures() -> None:
    root = ET.fromstring(render_drift(clean_report(), "junit"))
    assert (root.get("tests"), root.get("failures")) == ("4", "0")


def test_markdown_shape() -> None:
    text = render_drift(full_report(), "markdown")
    lines = text.splitlines()
    assert lines[0] == "### converge drift"
    assert "**Drift found**" in text
    table = next(i for i, line in enumerate(lines) if line.startswith("| in_sync"))
    assert table < text.splitlines().index(next(x for x in lines if x.startswith("<details")))
    assert "<details open><summary>3 backup polic(y/ies) not compliant" in text
    assert "drifted: <b>chat-operator</b>" in text
    assert "First &lt;app&gt; \\| \\`x\\`" in text  # escaped for both HTML and the table
    assert "<b>\x07" not in text
    assert "summarised" not in text


def test_markdown_stays_short_for_a_huge_estate() -> None:
    resources = tuple(
        resource(
            f"app-{n:05d}",
            ResourceStatus.DRIFTED,
            changes=(
                FieldChange(path="title", before="x" * 5_000, after=f"Wanted {n}"),
                FieldChange(path="roles", before=["a"], after=["b", "c"]),
            ),
            since=SINCE,
        )
        for n in range(5_000)
    )
    unmanaged = tuple(
        resource(None, ResourceStatus.UNMANAGED, id=f"u-{n}", title="t" * 400) for n in range(500)
    )
    report = DriftReport(
        checked=NOW,
        resources=resources + unmanaged,
        backups=tuple(policy(f"p{n}", PolicyState.OVERDUE) for n in range(300)),
    )
    text = render_drift(report, "markdown")
    assert len(text) < drift_markdown.MAX_CHARS
    assert "summarised" in text
    assert "| 0 | 5000 | 0 | 500 | 0 | 300 |" in text  # every count, whatever was cut
    assert "app-00000" in text
    assert text.count("<details") == text.count("</details>")


def test_text_table_history_and_colour() -> None:
    plain = render_drift(full_report(), "text")
    assert "drifted since 2026-11-21 08:30Z" in plain
    assert 'roles: live ["x"] → desired ["chatagent"]' in plain
    assert "1 in sync." in plain
    assert "overdue since 2026-11-21 08:30Z" in plain
    assert "Drift: 1 drifted, 1 missing, 1 orphaned, 1 in sync, 1 unmanaged;" in plain
    coloured = render_drift(full_report(), "text", color=True)
    assert "\x1b[33mdrifted" in coloured
    clean = render_drift(clean_report(), "text")
    assert "No drift" in clean
