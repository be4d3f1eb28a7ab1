"""Backup retention end to end (element and vcda): only the policy's own old backups go.

Ownership is recorded the realistic way: the backups converge itself triggered over several
applies. Backups someone else made (seeded on the server) are never expired, however old,
and neither is the newest success.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Emulator, Workspace
from tests.e2e.test_backups import prepare, recorded, seed

RETAINED = ("element", "vcda")
# The costlier cases: element in every run, vcda with -m slow.
ELEMENT_FIRST = ["element", pytest.param("vcda", marks=pytest.mark.slow)]


def successes(emulator: Emulator, api: str) -> list[str]:
    """Ids of the successful backups the server lists, oldest first."""
    if api == "vcda":
        return emulator.vcda_backup_ids()
    dumps = emulator.backups_on_server(api)
    return [d["id"] for d in dumps if d["status"] == "Ready"]


def apply_and_get_new(workspace: Workspace, emulator: Emulator, api: str) -> str:
    """One ``apply`` that makes one backup; its id."""
    before = set(successes(emulator, api))
    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    (made,) = [i for i in successes(emulator, api) if i not in before]
    return made


def wait_until_listed(emulator: Emulator, api: str, count: int) -> list[str]:
    deadline = time.monotonic() + 20
    while len(found := successes(emulator, api)) < count:
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    return found


@pytest.mark.parametrize("api", ELEMENT_FIRST)
def test_retention_expires_only_the_policys_own_backups_beyond_keep_last(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    workspace.backup_connection(api)
    prepare(emulator, api)
    foreign = [seed(emulator, api, hours=h) for h in (1000, 500, 100)]  # all past 30d / keepLast
    foreign_ids = successes(emulator, api)
    assert len(foreign_ids) == len(foreign)
    # maxAge 1s: every apply is due, so each one makes a backup of ours.
    workspace.policy(
        "often", api, spec="maxAge: 1s\nwait: 1m\nretention: {keepLast: 2, maxAge: 30d}"
    )

    ours = []
    for _ in range(3):
        ours.append(apply_and_get_new(workspace, emulator, api))
        time.sleep(1.1)  # our newest backup is now past maxAge 1s (vcda: since it ended)

    planned = workspace.run("plan", "manifests", "--format", "json", "--detailed-exitcode")
    assert planned.code == 2, planned.output
    actions = planned.json()["actions"]
    assert [a["action"] for a in actions] == ["backup", "expire"], actions
    assert actions[1]["backup_id"] == ours[0]  # the 3rd-newest of ours; never a foreign one

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    left = successes(emulator, api)
    assert ours[0] not in left
    assert set(foreign_ids) | set(ours[1:]) <= set(left)
    assert len(left) == len(foreign_ids) + 3  # ours[1], ours[2] and this apply's backup


@pytest.mark.parametrize("api", ELEMENT_FIRST)
def test_retention_keeps_the_newest_success_even_when_it_is_past_max_age(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    workspace.backup_connection(api)
    prepare(emulator, api)
    seed(emulator, api, hours=30)
    workspace.policy(
        "daily", api, spec="maxAge: 26h\nwait: 1m\nretention: {keepLast: 1, maxAge: 1s}"
    )
    ours = apply_and_get_new(workspace, emulator, api)
    time.sleep(1.1)  # ours is now past retention's maxAge, and it is the newest success

    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 0, planned.output
    assert ours in successes(emulator, api)


@pytest.mark.slow
@pytest.mark.parametrize("api", RETAINED)
def test_retention_owns_backups_triggered_without_waiting(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    """``wait: 0s`` (or ``--no-wait``): the state learns the trigger's handle only; for vcda
    that is a task, not the backup. Its backups must still count as the policy's own."""
    workspace.backup_connection(api)
    prepare(emulator, api)
    workspace.policy("quick", api, spec="maxAge: 1s\nwait: 0s\nretention: {keepLast: 1}")

    for count in (1, 2):
        applied = workspace.run("apply", "manifests", "--auto-approve")
        assert applied.code == 0, applied.output
        ours = wait_until_listed(emulator, api, count)
        time.sleep(1.1)

    planned = workspace.run("plan", "manifests", "--format", "json")
    assert planned.code == 0, planned.output
    expired = [a["backup_id"] for a in planned.json()["actions"] if a["action"] == "expire"]
    assert expired == [ours[0]]

    # apply learns the same, deletes exactly that one, and writes down what each task made.
    applied = workspace.run("apply", "manifests", "--auto-approve", "--no-wait")
    assert applied.code == 0, applied.output
    assert ours[0] not in successes(emulator, api) and ours[1] in successes(emulator, api)
    states = {r.backup_id: r.state for r in recorded(workspace, "quick", f"{api}-main")}
    assert states[ours[0]] == "expired" and states[ours[1]] == "succeeded", states
