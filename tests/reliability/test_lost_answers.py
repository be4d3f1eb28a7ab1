"""Timeouts after success: the server did the work, the answer never came back.

The emulator's ``drop_after_work`` carries the call out (and persists it), then closes the
connection without a byte. converge must recognise what it made — the roleapp by its
client-chosen id (LOOKUP), the backup by listing before it triggers again — and never make
a second one. A lost login answer is simply asked again.
"""

from __future__ import annotations

import pytest

from controller.state import open_store
from tests.reliability.conftest import Emulator, Workspace

BACKUP_CALLS = {
    "element": ("POST", r"/dumps$"),
    "vcda": ("POST", r"^/backups$"),
    "commvault": ("POST", r"(?i)^/createtask$"),
}
POLICIES = {
    "element": ("crm-dumps", "element-main"),
    "vcda": ("appliance", "vcda-main"),
    "commvault": ("orders-dynamodb", "commvault-main"),
}
LOGIN_CALLS = {
    "era": ("POST", r"^/rest/v1/iam/sessions$"),
    "element": ("POST", r"^/console/sys/token$"),
    "vcda": ("POST", r"^/sessions$"),
    "commvault": ("POST", r"(?i)^/login$"),
}


def test_lost_create_answers_make_no_duplicate_roleapps(
    workspace: Workspace, emulator: Emulator
) -> None:
    names = [f"app-{i}" for i in range(6)]
    workspace.connections()
    workspace.roleapps(names)
    emulator.control(
        "era",
        "drop_after_work",
        {"method": "POST", "path_regex": r"^/rest/v1/domain/roleapps$", "times": 4},
    )

    applied = workspace.run("apply", "manifests", "--auto-approve")

    assert applied.code == 0, applied.output
    assert emulator.stats("era")["faults_pending"]["drop_after_work"] == 0
    assert emulator.folders() == dict.fromkeys(names, 1)
    live = {r["folder"]: r["id"] for r in emulator.roleapps()}
    assert workspace.inventory() == live
    assert workspace.run("plan", "manifests", "--detailed-exitcode").code == 0


@pytest.mark.parametrize("api", sorted(BACKUP_CALLS))
def test_a_lost_trigger_answer_starts_one_backup_not_two(
    workspace: Workspace, emulator: Emulator, api: str
) -> None:
    emulator.seed_sources()
    workspace.connections()
    workspace.policies()
    method, path = BACKUP_CALLS[api]
    emulator.control(api, "drop_after_work", {"method": method, "path_regex": path, "times": 1})

    applied = workspace.run("apply", "manifests", "--auto-approve")

    assert applied.code == 0, applied.output
    assert emulator.stats(api)["faults_pending"]["drop_after_work"] == 0
    assert emulator.backups() == {"element": 1, "vcda": 1, "commvault": 1}
    # The backup it found again is the one the state remembers and followed to its end.
    policy, connection = POLICIES[api]
    store = open_store(f"sqlite:///{workspace.state_db}")
    try:
        states = [r.state for r in store.backups(policy=policy, connection=connection)]
    finally:
        store.close()
    assert "succeeded" in states, states
    assert workspace.run("plan", "manifests", "--detailed-exitcode").code == 0


@pytest.mark.parametrize("api", sorted(LOGIN_CALLS))
def test_a_lost_login_answer_is_asked_again(
    workspace: Workspace, emulator: Emulator, api: str
) -> None:
    emulator.seed_sources()
    workspace.connections()
    workspace.policies()
    workspace.roleapps(["app-0"])
    method, path = LOGIN_CALLS[api]
    emulator.control(api, "drop_after_work", {"method": method, "path_regex": path, "times": 1})

    planned = workspace.run("plan", "manifests")

    assert planned.code == 0, planned.output
    stats = emulator.stats(api)
    assert stats["faults_pending"]["drop_after_work"] == 0
    assert stats["logins"] == 2, stats  # the lost one and the one used
    assert stats["failed_logins"] == 0
