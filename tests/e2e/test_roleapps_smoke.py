"""The roleapp happy path, end to end: plan, apply, idempotent re-plan."""

from __future__ import annotations

from tests.e2e.conftest import Workspace, assert_no_secrets, assert_no_secrets_in_files


def test_apply_then_plan_shows_no_changes(workspace: Workspace) -> None:
    workspace.era_connection()
    workspace.roleapp(
        "chat-operator", extra="title: Chat\nroles: [chatagent]\nopts: {visible: true}"
    )
    workspace.roleapp("reports", extra="title: Reports")

    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 2, planned.output
    assert "Plan: 2 to create" in planned.stdout

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    live = {r["folder"]: r for r in workspace.emulator.roleapps()}
    assert live["chat-operator"]["title"] == "Chat"
    assert live["chat-operator"]["roles"] == ["chatagent"]

    again = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert again.code == 0, again.output
    assert_no_secrets(planned.output, applied.output, again.output)
    assert_no_secrets_in_files(workspace.written_files())
