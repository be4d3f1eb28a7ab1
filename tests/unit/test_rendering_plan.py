"""Unit tests for plan rendering: every format, colour, the JSON contract, load_plan, secrets.

Golden files under tests/unit/golden/ are updated deliberately:
``CONVERGE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_rendering_plan.py``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import planning, rendering
from controller.clients.backups import BackupState, LiveBackup
from controller.errors import ConvergeError
from controller.manifests import (
    BackupPolicy,
    ElementApplicationSource,
    Lifecycle,
    Retention,
    RoleApp,
    SourceLocation,
)
from controller.plans import (
    Action,
    ActionKind,
    FieldChange,
    GuardViolation,
    Plan,
    Ref,
    Unmanaged,
)
from controller.rendering import markdown
from controller.rendering.text import format_value
from controller.state.store import InventoryEntry

GOLDEN = Path(__file__).parent / "golden"
SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "plan.schema.json").read_text(encoding="utf-8")
)
NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
SECRET = "s3cr3t-do-not-show"
FORMATS = sorted(rendering.PLAN_RENDERERS)


def roleapp(name: str, folder: str, **kwargs: Any) -> RoleApp:
    fields = kwargs.pop("fields", {})
    return RoleApp(
        name=name,
        connection="era-main",
        fields={"folder": folder, **fields},
        source=SourceLocation("manifests/era.yaml", 12),
        lifecycle=kwargs.pop("lifecycle", Lifecycle()),
        **kwargs,
    )


def built_plan() -> Plan:
    """A plan with every action kind, made by the real planner."""
    made = NOW - timedelta(days=3)
    backups = [
        LiveBackup(
            id=f"b{n}",
            state=BackupState.SUCCEEDED,
            created=made - timedelta(days=n),
            finished=made - timedelta(days=n),
        )
        for n in range(3)
    ]
    return planning.build_plan(
        roleapps=[
            roleapp(
                "chat-operator",
                "roleapp1",
                id="68f99ca9-016c-d352-e02f-50e54938780c",
                fields={"title": "АРМ оператора", "roles": ["chatagent"]},
            ),
            roleapp(
                "new-app", "new", archive="/m/apps/new.zip", fields={"opts": {"visible": True}}
            ),
            roleapp("adopted", "roleapp2"),
        ],
        live={
            "era-main": [
                {
                    "id": "68f99ca9-016c-d352-e02f-50e54938780c",
                    "folder": "roleapp1",
                    "title": "First app",
                    "roles": ["x"],
                },
                {"id": "00000000-0000-0000-0000-000000000002", "folder": "roleapp2"},
                {"id": "00000000-0000-0000-0000-000000000003", "folder": "gone"},
                {
                    "id": "00000000-0000-0000-0000-000000000004",
                    "folder": "theirs",
                    "title": "Someone's app",
                },
            ]
        },
        inventory=[
            InventoryEntry(
                kind="RoleApp",
                connection="era-main",
                name="gone",
                id="00000000-0000-0000-0000-000000000003",
                applied_at=made,
            ),
        ],
        policies=[
            BackupPolicy(
                name="crm-nightly",
                connection="element-main",
                source=ElementApplicationSource(application_id="app"),
                max_age=26 * 3600.0,
                retention=Retention(keep_last=1),
                source_location=SourceLocation("manifests/backups.yaml", 3),
            )
        ],
        backups={"crm-nightly": backups},
        owned_backups={"crm-nightly": {"b0", "b1", "b2"}},
        archives={"new-app": "9a29b5c0d1e2f3a4b5c6d7e8f9a0b1c2"},
        now=NOW,
    )


def secret_plan() -> Plan:
    return Plan(
        created=NOW,
        actions=(
            Action(
                kind=ActionKind.UPDATE,
                ref=Ref("RoleApp", "era-main", "with-secret"),
                id="1",
                reason="opts.password differs",
                changes=(
                    FieldChange(
                        path="opts.password", before="old" + SECRET, after=SECRET, sensitive=True
                    ),
                ),
                fingerprint="f" * 64,
                patch={"opts": {"password": SECRET}},
            ),
        ),
    )


def odd_values_plan() -> Plan:
    return Plan(
        created=NOW,
        actions=(
            Action(
                kind=ActionKind.UPDATE,
                ref=Ref("RoleApp", "era-main", "pipes"),
                id="1",
                reason="title differs",
                changes=(FieldChange(path="title", before="a | b", after="`code`\nline2"),),
                fingerprint="f" * 64,
                patch={"title": "`code`\nline2"},
            ),
        ),
        unmanaged=(Unmanaged("era-main", "2", "x|y"),),
        guard_violations=(
            GuardViolation(ref=Ref("RoleApp", "era-main", "pipes"), guard="conflict", message="m"),
        ),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_every_action_kind(fmt: str) -> None:
    plan = built_plan()
    assert {a.kind for a in plan.actions} == set(ActionKind)
    out = rendering.render_plan(plan, fmt)
    for name in ("chat-operator", "new-app", "adopted", "gone", "crm-nightly"):
        assert name in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_colour_unless_asked(fmt: str) -> None:
    assert "\x1b[" not in rendering.render_plan(built_plan(), fmt)


def test_text_colour_when_asked() -> None:
    assert "\x1b[32m" in rendering.render_plan(built_plan(), "text", color=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_secret_values_never_appear(fmt: str) -> None:
    out = rendering.render_plan(secret_plan(), fmt)
    assert SECRET not in out
    assert "(sensitive, changed)" in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_golden(fmt: str) -> None:
    suffix = {"text": "txt", "json": "json", "markdown": "md"}[fmt]
    golden = GOLDEN / f"plan.{suffix}"
    out = rendering.render_plan(built_plan(), fmt)
    if os.environ.get("CONVERGE_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")


def test_text_summary_and_empty_plan() -> None:
    out = rendering.render_plan(built_plan(), "text")
    assert out.rstrip().endswith(
        "Plan: 1 to create, 1 to update, 1 to delete, 1 to adopt, 1 to archive, "
        "1 to back up, 2 to expire; 0 unchanged."
    )
    empty = rendering.render_plan(Plan(created=NOW, unchanged=3), "text")
    assert empty == "No changes. Live state matches the manifests.\n"


@pytest.mark.parametrize(
    "plan", [built_plan(), secret_plan(), odd_values_plan(), Plan(created=NOW)]
)
def test_json_matches_the_schema(plan: Plan) -> None:
    doc = json.loads(rendering.render_plan(plan, "json"))
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_json_has_cli_md_keys() -> None:
    doc = json.loads(rendering.render_plan(built_plan(), "json"))
    assert doc["format"] == "converge.plan/v1"
    assert doc["created"] == "2026-11-23T10:00:00Z"
    assert set(doc["summary"]) == {a.value for a in ActionKind} | {"unchanged"}
    update = next(a for a in doc["actions"] if a["action"] == "update")
    assert update == update | {
        "kind": "RoleApp",
        "name": "chat-operator",
        "connection": "era-main",
        "id": "68f99ca9-016c-d352-e02f-50e54938780c",
        "source": "manifests/era.yaml:12",
        "reason": "roles, title differ",
        "changes": [
            {"path": "roles", "before": ["x"], "after": ["chatagent"]},
            {"path": "title", "before": "First app", "after": "АРМ оператора"},
        ],
    }
    assert len(update["fingerprint"]) == 64
    text = rendering.render_plan(built_plan(), "json")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("plan", [built_plan(), odd_values_plan(), Plan(created=NOW)])
def test_load_plan_round_trip(plan: Plan) -> None:
    assert rendering.load_plan(rendering.render_plan(plan, "json")) == plan


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"format": "converge.drift/v1"}', "not a converge.plan/v1 plan file"),
        ('{"format": "converge.plan/v1"}', "damaged"),
    ],
)
def test_load_plan_refuses_what_is_not_a_plan(text: str, message: str) -> None:
    with pytest.raises(ConvergeError, match=message):
        rendering.load_plan(text)


def test_load_plan_refuses_masked_secret_payloads() -> None:
    with pytest.raises(ConvergeError, match="masked"):
        rendering.load_plan(rendering.render_plan(secret_plan(), "json"))


def test_markdown_escapes_pipes_and_backticks() -> None:
    out = rendering.render_plan(odd_values_plan(), "markdown")
    assert '"a \\| b"' in out
    assert "\\`code\\`" in out
    assert "x\\|y" in out
    rows = [line for line in out.splitlines() if line.startswith("| title |")]
    assert rows and all(row.count(" | ") == 2 for row in rows)


def test_markdown_stays_under_the_comment_limit() -> None:
    actions = tuple(
        Action(
            kind=ActionKind.UPDATE,
            ref=Ref("RoleApp", "era-main", f"app-{n:05}"),
            id=str(n),
            reason="title differs",
            changes=(FieldChange(path="title", before="x" * 50, after="y" * 50),),
            fingerprint="f" * 64,
        )
        for n in range(2000)
    )
    out = rendering.render_plan(Plan(created=NOW, actions=actions), "markdown")
    assert len(out) <= markdown.MAX_CHARS
    assert "more action(s)" in out
    assert "| 2000 |" in out  # the summary still counts everything


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown plan format"):
        rendering.render_plan(Plan(created=NOW), "yaml")


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(_JSON_VALUES)
def test_format_value_is_json_dumps(value: Any) -> None:
    # format_value skips json.dumps for lone scalars; it must print exactly what it would.
    assert format_value(value) == json.dumps(value, ensure_ascii=False, sort_keys=True)


def test_format_value_keeps_cyrillic_and_escapes_quotes() -> None:
    assert format_value('Отдел "кадров"\n') == '"Отдел \\"кадров\\"\\n"'
    assert [format_value(v) for v in (None, True, False, 0, -7)] == [
        "null",
        "true",
        "false",
        "0",
        "-7",
    ]
