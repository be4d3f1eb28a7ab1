"""Crashes: ``converge apply`` SIGKILLed at different points of a 300-object apply.

Each round changes the manifests, starts an apply as a subprocess, kills it with SIGKILL
when the emulator has seen a given number of its writes (or while it is still reading, or
while its backups run), then applies again. After every kill: the lock is not left behind
(the next apply does not exit 4: a dead pid's lock is stale), the next apply converges,
no roleapp or backup is duplicated, nothing unmanaged is touched, and the inventory
(``converge state list --format json``) names exactly the live objects.
"""

from __future__ import annotations

import pytest

from controller.state import open_store
from tests.reliability.conftest import (
    HOUR,
    Emulator,
    Workspace,
    kill_when,
    unmanaged_roleapps,
)

OBJECTS = 300
CREATE = "POST /rest/v1/domain/roleapps"
UPDATE = "PATCH /rest/v1/domain/roleapps/{id}"
DELETE = "DELETE /rest/v1/domain/roleapps/{id}"
LIST = "GET /rest/v1/domain/roleapps"


def calls(emulator: Emulator, api: str, call: str) -> int:
    return int(emulator.stats(api)["calls"].get(call, 0))


def crash_then_converge(
    workspace: Workspace, emulator: Emulator, *, kill_at: str, api: str, count: int
) -> None:
    """Kill an apply once ``api`` has answered ``count`` more ``kill_at`` calls; apply again."""
    start = calls(emulator, api, kill_at)
    process = workspace.start("apply", "manifests", "--auto-approve", "--max-deletes", "1000")
    killed = kill_when(process, lambda: calls(emulator, api, kill_at) >= start + count)
    assert killed, f"the apply ended before {count} x {kill_at}"

    store = open_store(f"sqlite:///{workspace.state_db}")
    try:
        assert store.lock_info() is None, "a killed apply's lock still counts as held"
    finally:
        store.close()
    applied = workspace.run("apply", "manifests", "--auto-approve", "--max-deletes", "1000")
    assert applied.code == 0, applied.output[-3000:]


def assert_matches(workspace: Workspace, emulator: Emulator, names: list[str]) -> None:
    hand_made = {r["folder"] for r in unmanaged_roleapps(5)}
    folders = emulator.folders()
    assert {f: n for f, n in folders.items() if n > 1} == {}, "duplicated roleapps"
    assert set(folders) == set(names) | hand_made
    live = {r["folder"]: r["id"] for r in emulator.roleapps() if r["folder"] not in hand_made}
    assert workspace.inventory() == live


@pytest.mark.slow
def test_apply_killed_at_random_points_recovers_every_time(
    workspace: Workspace, emulator: Emulator
) -> None:
    emulator.seed_sources()
    emulator.control("era", "seed", {"roleapps": unmanaged_roleapps(5)})
    # Slow enough that every kill point is reached while the apply is still running.
    emulator.control("server", "fault", {"latency": 0.005})
    workspace.connections()
    names = [f"app-{i:03d}" for i in range(OBJECTS)]
    workspace.roleapps(names)

    # 1. While it reads, before it writes anything.
    crash_then_converge(workspace, emulator, kill_at=LIST, api="era", count=1)
    assert_matches(workspace, emulator, names)

    # 2. Right after the first create (its id not yet in the inventory, most likely).
    workspace.roleapps(names, title="Second")
    names2 = [f"new-{i:03d}" for i in range(100)]
    workspace.roleapps(names2, file="more.yaml")
    crash_then_converge(workspace, emulator, kill_at=CREATE, api="era", count=1)
    assert_matches(workspace, emulator, names + names2)

    # 3. A third of the way through 300 updates.
    workspace.roleapps(names, title="Third")
    crash_then_converge(workspace, emulator, kill_at=UPDATE, api="era", count=100)
    assert_matches(workspace, emulator, names + names2)

    # 4. Half way through pruning 100 objects.
    workspace.remove_file("more.yaml")
    crash_then_converge(workspace, emulator, kill_at=DELETE, api="era", count=50)
    assert_matches(workspace, emulator, names)

    # 5. Near the end of 300 updates.
    workspace.roleapps(names, title="Fifth")
    crash_then_converge(workspace, emulator, kill_at=UPDATE, api="era", count=280)
    assert_matches(workspace, emulator, names)
    assert {r["title"] for r in emulator.roleapps() if r["folder"] in names} == {
        f"Fifth {n}" for n in names
    }

    # 6. While the backups it triggered are running: the next apply follows them and
    #    never starts a second one.
    for api in ("element", "vcda", "commvault"):
        emulator.control(api, "set_duration", {"seconds": 3})
        emulator.control(api, "seed_backup", {"age_seconds": 30 * HOUR})
    workspace.policies()
    before = emulator.backups()
    crash_then_converge(workspace, emulator, kill_at="POST /CreateTask", api="commvault", count=1)
    assert emulator.backups() == {api: n + 1 for api, n in before.items()}
    assert_matches(workspace, emulator, names)

    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 0, planned.output
