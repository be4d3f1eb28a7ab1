"""`converge drift` end to end: drift made on the server, in every format, read-only.

Roleapps are applied, then changed behind converge's back through the emulator's control
plane (``edit``, a seeded stranger, a deletion over the API); drift must report each with
the right field and values, in every format, without one write to the API. Backup policies
on element, vcda and commvault are seeded overdue, failing and never backed up.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from controller.state import open_store
from tests.e2e.conftest import (
    SECRETS,
    Emulator,
    Workspace,
    assert_no_secrets,
    assert_no_secrets_in_files,
)

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "drift.schema.json").read_text(encoding="utf-8")
)
FORMATS = ("text", "json", "markdown", "junit")
WRITES = ("POST", "PATCH", "PUT", "DELETE")
APP = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
APP2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
SUBCLIENT = 123
H = 3600


def roleapp_writes(emulator: Emulator) -> dict[str, int]:
    """Calls that could change a roleapp (sessions are not roleapps)."""
    calls = emulator.control("era", "stats")["calls"]
    return {
        call: count
        for call, count in calls.items()
        if call.split(" ", 1)[0] in WRITES and "roleapps" in call
    }


def delete_on_server(emulator: Emulator, roleapp_id: str) -> None:
    token = emulator.http.post(
        "/era/rest/v1/iam/sessions",
        json={
            "domain": "sandbox.era",
            "login": "converge",
            "pwd": SECRETS["ERA_PASSWORD"],
            "session_type": "api",
        },
    ).json()["session_token"]
    response = emulator.http.delete(
        f"/era/rest/v1/domain/roleapps/{roleapp_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code < 300, response.text


@pytest.fixture
def drifted(workspace: Workspace) -> Workspace:
    """Three applied roleapps, then: one edited, one deleted, one stranger seeded."""
    workspace.era_connection()
    workspace.roleapp(
        "chat-operator", extra="title: Chat\nroles: [chatagent]\nopts: {visible: true}"
    )
    workspace.roleapp("reports", extra="title: Reports")
    workspace.roleapp("archive-viewer", extra="title: Archive viewer")
    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    emulator = workspace.emulator
    assert emulator is not None
    live = {r["folder"]: r for r in emulator.roleapps()}
    emulator.control(
        "era",
        "edit",
        {"id": live["chat-operator"]["id"], "fields": {"title": "Edited by hand", "roles": ["x"]}},
    )
    delete_on_server(emulator, live["archive-viewer"]["id"])
    emulator.control(
        "era", "seed", {"roleapps": [{"folder": "stranger", "title": "Someone's app"}]}
    )
    return workspace


def test_drift_in_every_format(drifted: Workspace) -> None:
    emulator = drifted.emulator
    assert emulator is not None
    writes_before = roleapp_writes(emulator)
    outputs = {}
    for fmt in FORMATS:
        result = drifted.run("drift", "manifests", "--format", fmt)
        assert result.code == 2, result.output
        outputs[fmt] = result.stdout
        assert_no_secrets(result.output)
    assert roleapp_writes(emulator) == writes_before, "drift wrote to the roleapps API"

    doc = json.loads(outputs["json"])
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    summary = doc["summary"]
    assert (summary["in_sync"], summary["drifted"], summary["missing"]) == (1, 1, 1)
    assert summary["unmanaged"] == 1
    by_name = {r["name"]: r for r in doc["resources"]}
    chat = by_name["chat-operator"]
    assert chat["status"] == "drifted"
    assert {c["path"]: (c["live"], c["desired"]) for c in chat["changes"]} == {
        "roles": (["x"], ["chatagent"]),
        "title": ("Edited by hand", "Chat"),
    }
    assert "since" in chat
    assert by_name["archive-viewer"]["status"] == "missing"
    assert by_name["reports"]["status"] == "in_sync"
    (stranger,) = [r for r in doc["resources"] if r["status"] == "unmanaged"]
    assert stranger["name"] is None and stranger["title"] == "Someone's app"

    text = outputs["text"]
    assert 'title: live "Edited by hand" → desired "Chat"' in text
    assert "drifted since" in text and "missing" in text and "Someone's app" in text

    markdown = outputs["markdown"]
    assert len(markdown) < 60_000
    assert "drifted: <b>chat-operator</b>" in markdown
    assert '| title | "Edited by hand" | "Chat" |' in markdown
    assert "Someone's app" in markdown

    root = ET.fromstring(outputs["junit"])
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    failure = cases["chat-operator"].find("failure")
    assert failure is not None
    assert 'title: live "Edited by hand" → desired "Chat"' in (failure.get("message") or "")
    assert cases["archive-viewer"].find("failure") is not None
    assert cases["reports"].find("failure") is None
    assert_no_secrets_in_files(drifted.written_files())


def test_history_output_file_and_back_in_sync(drifted: Workspace, tmp_path: Path) -> None:
    first = drifted.run("drift", "manifests", "--format", "json").json()
    out = drifted.root / "drift.xml"
    second = drifted.run("drift", "manifests", "--format", "junit", "--output", str(out))
    assert second.code == 2, second.output
    assert "1 drifted, 1 missing" in second.stdout
    ET.fromstring(out.read_text(encoding="utf-8"))
    third = drifted.run("drift", "manifests", "--format", "json").json()

    def since(doc: dict[str, Any]) -> str:
        return next(r["since"] for r in doc["resources"] if r["name"] == "chat-operator")

    assert since(first) == since(third)  # first seen stays put while it keeps drifting

    fixed = drifted.run("apply", "manifests", "--auto-approve")
    assert fixed.code == 0, fixed.output
    clean = drifted.run("drift", "manifests")
    # The stranger is still there: unmanaged objects alone are not drift.
    assert clean.code == 0, clean.output
    assert "No drift" in clean.stdout
    assert "Someone's app" in clean.stdout

    store = open_store(f"sqlite:///{drifted.root / '.converge' / 'state.db'}")
    try:
        runs = [r for r in store.runs() if r.command == "drift"]
        assert [r.outcome for r in runs[:2]] == ["in_sync", "drift"]
        assert runs[1].summary["drifted"] == 1
        assert store.drift() == []  # nothing open once back in sync
        closed = {r.key: r for r in store.drift(include_closed=True)}
        assert closed["RoleApp/era-main/chat-operator"].closed_at is not None
        assert closed["RoleApp/era-main/chat-operator"].detail == "drifted: roles, title"
    finally:
        store.close()


def test_drift_scoped_by_target(drifted: Workspace) -> None:
    result = drifted.run("drift", "manifests", "--format", "json", "--target", "RoleApp/reports")
    assert result.code == 0, result.output
    doc = result.json()
    assert [r["name"] for r in doc["resources"]] == ["reports"]
    # The scoped run did not close the drift it did not look at.
    again = drifted.run("drift", "manifests", "--format", "json").json()
    first_seen = next(r["since"] for r in again["resources"] if r["name"] == "chat-operator")
    assert first_seen <= again["checked"]


def test_drift_error_exits_1(workspace: Workspace) -> None:
    workspace.write("bad.yaml", "apiVersion: converge/v1\nkind: RoleApp\n")
    result = workspace.run("drift", "manifests")
    assert result.code == 1, result.output


# -- backup policies ------------------------------------------------------------------------


def backup_manifests(workspace: Workspace) -> None:
    workspace.write(
        "backups.yaml",
        f"""
        apiVersion: converge/v1
        kind: Connection
        metadata: {{name: element-main}}
        spec:
          api: element
          url: ${{ELEMENT_URL}}
          auth: {{clientId: converge, clientSecret: "${{ELEMENT_CLIENT_SECRET}}"}}
        ---
        apiVersion: converge/v1
        kind: Connection
        metadata: {{name: vcda-main}}
        spec:
          api: vcda
          url: ${{VCDA_URL}}
          auth: {{type: localUser, user: admin, password: "${{VCDA_PASSWORD}}"}}
        ---
        apiVersion: converge/v1
        kind: Connection
        metadata: {{name: commvault-main}}
        spec:
          api: commvault
          url: ${{COMMVAULT_URL}}
          auth: {{username: admin, password: "${{COMMVAULT_PASSWORD}}"}}
        ---
        apiVersion: converge/v1
        kind: BackupPolicy
        metadata: {{name: crm}}
        spec:
          connection: element-main
          maxAge: 26h
          source:
            elementApplication: {{applicationId: {APP}, includeUsers: true, includeBinaryData: true}}
        ---
        apiVersion: converge/v1
        kind: BackupPolicy
        metadata: {{name: hr}}
        spec:
          connection: element-main
          maxAge: 26h
          source:
            elementApplication: {{applicationId: {APP2}, includeUsers: true, includeBinaryData: true}}
        ---
        apiVersion: converge/v1
        kind: BackupPolicy
        metadata: {{name: appliance}}
        spec:
          connection: vcda-main
          maxAge: 26h
          source:
            vcdaAppliance: {{password: "${{VCDA_BACKUP_PASSWORD}}"}}
        ---
        apiVersion: converge/v1
        kind: BackupPolicy
        metadata: {{name: orders}}
        spec:
          connection: commvault-main
          maxAge: 26h
          source:
            commvaultDynamoDB: {{clientName: aws-prod, instanceName: DynamoDB, subclientName: orders-tables, subclientId: {SUBCLIENT}}}
        """,
    )


def test_backup_states_overdue_failing_never_compliant(workspace: Workspace) -> None:
    emulator = workspace.emulator
    assert emulator is not None
    if not {"element", "vcda", "commvault"} <= set(emulator.server.apis):
        pytest.skip("the backup emulators are not all served yet")
    backup_manifests(workspace)
    emulator.control("element", "seed_application", {"id": APP})
    emulator.control(
        "element",
        "seed_backup",
        {"application_id": APP, "age_seconds": 30 * H, "status": "Ready"},
    )
    emulator.control("element", "seed_application", {"id": APP2})
    emulator.control(
        "element",
        "seed_backup",
        {"application_id": APP2, "age_seconds": 20 * H, "status": "Ready"},
    )
    emulator.control(
        "element",
        "seed_backup",
        {"application_id": APP2, "age_seconds": 600, "status": "Error", "message": "disk full"},
    )
    emulator.control("vcda", "seed_backup", {"age_seconds": 2 * H, "status": "SUCCEEDED"})
    emulator.control(
        "commvault",
        "seed_subclient",
        {
            "subclient_id": SUBCLIENT,
            "client_name": "aws-prod",
            "subclient_name": "orders-tables",
        },
    )
    started = {api: _started(emulator, api) for api in ("element", "vcda", "commvault")}

    result = workspace.run("drift", "manifests", "--format", "json")
    assert result.code == 2, result.output
    doc = result.json()
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    states = {b["name"]: b for b in doc["backups"]}
    assert {name: b["status"] for name, b in states.items()} == {
        "crm": "overdue",
        "hr": "failing",
        "appliance": "compliant",
        "orders": "never",
    }
    crm = states["crm"]
    assert crm["max_age_seconds"] == 26 * H
    assert 30 * H - 120 <= crm["age_seconds"] <= 30 * H + 120
    assert crm["last_success"] is not None
    assert states["orders"]["last_success"] is None
    assert "disk full" in states["hr"].get("message", "")
    assert (doc["summary"]["overdue"], doc["summary"]["failing"], doc["summary"]["never"]) == (
        1,
        1,
        1,
    )

    for fmt in ("text", "markdown", "junit"):
        shown = workspace.run("drift", "manifests", "--format", fmt)
        assert shown.code == 2, shown.output
        assert "crm" in shown.stdout and "overdue" in shown.stdout
        assert_no_secrets(shown.output)
    root = ET.fromstring(workspace.run("drift", "manifests", "--format", "junit").stdout)
    assert (root.get("tests"), root.get("failures")) == ("4", "3")
    text = workspace.run("drift", "manifests").stdout
    assert "30h" in text and "26h" in text  # age and RPO
    # Drift never triggers a backup.
    assert {api: _started(emulator, api) for api in started} == started
    assert_no_secrets(result.output)
    assert_no_secrets_in_files(workspace.written_files())


def _started(emulator: Emulator, api: str) -> int:
    """Backups the server was asked to start (seeded ones not counted); logins and
    commvault's job queries are POSTs too, so the calls by method cannot tell."""
    return int(emulator.control(api, "stats").get("counts", {}).get("backups_started", 0))
