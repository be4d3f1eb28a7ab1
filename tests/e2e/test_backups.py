"""Backup policies end to end (issue 4), for each of element, vcda and commvault.

Each test runs the real ``converge`` CLI against the emulator over loopback HTTP and then
checks the backup server itself (its own API, or its control-plane counts): a due policy
gets exactly one backup and apply waits for it; a fresh or running one gets none; a failed
backup fails the run naming the policy, the connection and the server's words; ``--no-wait``
records the trigger at once; a lost answer to the trigger never makes a second backup.
Retention, secrets and the examples are in ``test_backups_retention.py`` and
``test_backups_secrets.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from controller.state import open_store
from tests.e2e.conftest import COMMVAULT_SUBCLIENT, ELEMENT_APP, Emulator, Workspace

HOUR = 3600
PRODUCTS = ("element", "vcda", "commvault")
# For the costlier cases: element in every run, the other two products with -m slow.
ELEMENT_FIRST = [p if p == "element" else pytest.param(p, marks=pytest.mark.slow) for p in PRODUCTS]
# A word each product uses for a backup still in progress.
RUNNING_WORD = {"element": "Creating", "vcda": "RUNNING", "commvault": "Running"}
# The call that starts a backup, as the API sees its path (for drop_after_work).
TRIGGER_CALL = {
    "element": {"method": "POST", "path_regex": "/dumps$"},
    "vcda": {"method": "POST", "path_regex": "^/backups$"},
    "commvault": {"method": "POST", "path_regex": "(?i)^/createtask$"},
}


def prepare(emulator: Emulator, api: str, *, seconds: float = 0.5) -> None:
    """The application or subclient a real account would already have; quick backups."""
    if api == "element":
        emulator.control(api, "seed_application", {"id": ELEMENT_APP, "name": "crm"})
    if api == "commvault":
        emulator.control(
            api,
            "seed_subclient",
            {
                "subclient_id": COMMVAULT_SUBCLIENT,
                "client_name": "aws-prod",
                "subclient_name": "orders-tables",
            },
        )
    emulator.control(api, "set_duration", {"seconds": seconds})


def seed(emulator: Emulator, api: str, *, hours: float, status: str | None = None) -> Any:
    """A backup someone made ``hours`` ago (a finished one ended then)."""
    payload: dict[str, Any] = {"age_seconds": hours * HOUR}
    if status is not None:
        payload["status"] = status
    if api == "element":
        payload["application_id"] = ELEMENT_APP
    if api == "commvault":
        payload["subclient_id"] = COMMVAULT_SUBCLIENT
    return emulator.control(api, "seed_backup", payload)


def server_id(api: str, item: dict[str, Any]) -> str:
    return str(item["jobId"] if api == "commvault" else item["id"])


def server_state(api: str, item: dict[str, Any]) -> str:
    """succeeded, failed or running, read from the product's own words."""
    word = str(item["status"] if api in ("element", "commvault") else item["state"])
    if api == "element":
        return "succeeded" if word == "Ready" else "failed" if "rror" in word else "running"
    if api == "vcda":
        return {"SUCCEEDED": "succeeded", "FAILED": "failed"}.get(word, "running")
    low = word.lower()
    if not any(w in low for w in ("completed", "committed", "failed", "killed")):
        return "running"
    return "failed" if low in ("failed", "killed", "failed to start") else "succeeded"


def backup_id(api: str, item: dict[str, Any]) -> str:
    """The id of the backup a finished server item made (a vcda task names its backup)."""
    return str(item["result"]["id"]) if api == "vcda" else server_id(api, item)


def new_on_server(emulator: Emulator, api: str, before: list[dict[str, Any]]) -> list[Any]:
    known = {server_id(api, item) for item in before}
    return [i for i in emulator.backups_on_server(api) if server_id(api, i) not in known]


def recorded(workspace: Workspace, policy: str, connection: str) -> list[Any]:
    """The backups the state records for ``policy`` (read from the SQLite state itself)."""
    store = open_store(f"sqlite:///{workspace.root / '.converge' / 'state.db'}")
    try:
        return store.backups(policy=policy, connection=connection)
    finally:
        store.close()


@pytest.fixture(params=PRODUCTS)
def api(request: pytest.FixtureRequest, workspace: Workspace, emulator: Emulator) -> str:
    """Each product in turn, with its Connection written and its server prepared."""
    product = str(request.param)
    workspace.backup_connection(product)
    prepare(emulator, product)
    return product


def test_overdue_policy_is_backed_up_waited_for_and_then_compliant(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    seed(emulator, api, hours=30)
    workspace.policy("nightly", api, spec="maxAge: 26h\nwait: 1m")
    before = emulator.backups_on_server(api)

    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 2, planned.output
    assert "backup BackupPolicy nightly" in planned.stdout
    assert "newest success 30h ago exceeds maxAge 26h" in planned.stdout

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    made = new_on_server(emulator, api, before)
    assert [server_state(api, m) for m in made] == ["succeeded"], made
    assert "1 succeeded, 0 failed" in applied.stdout
    # The state knows the backup as done, under the id retention will later find it by.
    records = recorded(workspace, "nightly", f"{api}-main")
    assert {r.state for r in records} == {"succeeded"}, records
    assert backup_id(api, made[0]) in {r.backup_id for r in records}

    again = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert again.code == 0, again.output
    assert emulator.backups_started(api) == 1


def test_fresh_policy_needs_no_backup(api: str, workspace: Workspace, emulator: Emulator) -> None:
    seed(emulator, api, hours=1)
    workspace.policy("nightly", api, spec="maxAge: 26h\nwait: 1m")

    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 0, planned.output
    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    assert emulator.backups_started(api) == 0


def test_running_backup_is_never_doubled(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    seed(emulator, api, hours=30)  # overdue by maxAge, but ...
    seed(emulator, api, hours=0.1, status=RUNNING_WORD[api])  # ... one is in progress
    workspace.policy("nightly", api, spec="maxAge: 26h\nwait: 1m")

    planned = workspace.run("plan", "manifests", "--detailed-exitcode", "--format", "json")
    assert planned.code == 0, planned.output
    assert planned.json()["summary"]["backup"] == 0
    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    assert emulator.backups_started(api) == 0


def test_no_wait_records_the_trigger_at_once_and_then_counts_it_as_running(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    emulator.control(api, "set_duration", {"seconds": 60})  # far longer than the test
    seed(emulator, api, hours=30)
    workspace.policy("nightly", api, spec="maxAge: 26h\nwait: 10m")

    started = time.monotonic()
    applied = workspace.run("apply", "manifests", "--auto-approve", "--no-wait")
    assert applied.code == 0, applied.output
    assert time.monotonic() - started < 30, "--no-wait waited for the backup"
    (made,) = emulator.backups_on_server(api)[1:]
    assert server_state(api, made) == "running"
    (record,) = recorded(workspace, "nightly", f"{api}-main")
    assert (record.handle, record.state) == (server_id(api, made), "running")
    assert record.handle in applied.stdout

    # The next run sees it running: nothing to trigger, and no second backup.
    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 0, planned.output
    again = workspace.run("apply", "manifests", "--auto-approve")
    assert again.code == 0, again.output
    assert emulator.backups_started(api) == 1


@pytest.mark.parametrize("api", ELEMENT_FIRST, indirect=True)
def test_lost_answer_to_the_trigger_makes_exactly_one_backup(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    seed(emulator, api, hours=30)
    workspace.policy("nightly", api, spec="maxAge: 26h\nwait: 1m")
    emulator.control(api, "drop_after_work", {**TRIGGER_CALL[api], "times": 1})
    before = emulator.backups_on_server(api)

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    made = new_on_server(emulator, api, before)
    assert [server_state(api, m) for m in made] == ["succeeded"], made
    assert emulator.backups_started(api) == 1
    again = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert again.code == 0, again.output


FAILURE = "storage pool nightly-7 is full (quota 2 TiB)"


def test_failed_backup_fails_apply_naming_policy_connection_and_server_message(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    seed(emulator, api, hours=30)
    workspace.policy("nightly", api, spec="maxAge: 26h\nwait: 1m")
    emulator.control(api, "fail_next_backup", {"message": FAILURE})

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 1, applied.output  # the only action failed
    failure = next(line for line in applied.output.splitlines() if FAILURE in line)
    assert "nightly" in failure and f"{api}-main" in failure, failure
    assert emulator.backups_started(api) == 1
    (record,) = recorded(workspace, "nightly", f"{api}-main")
    assert record.state == "failed"

    # The newest attempt failed: the policy stays due, and says why.
    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 2, planned.output
    if api != "vcda":  # vcda lists backups and running tasks only: a failed task is not seen
        assert FAILURE in planned.stdout


@pytest.mark.parametrize("api", ELEMENT_FIRST, indirect=True)
def test_failed_backup_beside_a_successful_one_exits_5(
    api: str, workspace: Workspace, emulator: Emulator
) -> None:
    other = "vcda" if api != "vcda" else "element"
    workspace.backup_connection(other)
    prepare(emulator, other)
    seed(emulator, api, hours=30)
    seed(emulator, other, hours=30)
    workspace.policy("failing", api, spec="maxAge: 26h\nwait: 1m")
    workspace.policy("working", other, spec="maxAge: 26h\nwait: 1m")
    emulator.control(api, "fail_next_backup", {"message": FAILURE})

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 5, applied.output
    failure = next(line for line in applied.output.splitlines() if FAILURE in line)
    assert "failing" in failure and f"{api}-main" in failure, failure
    assert "1 succeeded, 1 failed" in applied.stdout
    assert emulator.backups_started(other) == 1


@pytest.mark.slow
def test_schedule_slot_without_a_backup_is_due(workspace: Workspace, emulator: Emulator) -> None:
    workspace.element_connection()
    prepare(emulator, "element")
    seed(emulator, "element", hours=2)
    workspace.policy("hourly", "element", spec='schedule: "0 * * * *"\nwait: 1m')

    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 2, planned.output
    slot = time.strftime("%H:00", time.gmtime())
    assert f"no backup since the {slot} slot" in planned.stdout or (
        # the hour turned between the two clocks
        f"no backup since the {time.strftime('%H:00', time.gmtime(time.time() - 60))} slot"
        in planned.stdout
    ), planned.stdout
    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    assert workspace.run("plan", "manifests", "--detailed-exitcode").code == 0


def test_wait_running_out_fails_the_run_and_the_backup_is_not_doubled(
    workspace: Workspace, emulator: Emulator
) -> None:
    workspace.element_connection()
    prepare(emulator, "element", seconds=60)
    seed(emulator, "element", hours=30)
    workspace.policy("slow", "element", spec="maxAge: 26h\nwait: 1s")

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 1, applied.output
    assert "did not finish within wait 1s" in applied.output
    # Still running on the server: the next apply waits for it rather than starting another.
    again = workspace.run("apply", "manifests", "--auto-approve")
    assert again.code == 0, again.output
    assert emulator.backups_started("element") == 1


def test_suspended_policy_is_reported_never_triggered_nor_expired(
    workspace: Workspace, emulator: Emulator
) -> None:
    workspace.element_connection()
    prepare(emulator, "element")
    seed(emulator, "element", hours=30)
    workspace.policy("paused", "element", spec="maxAge: 26h\nwait: 1m\nsuspend: true")

    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 0, planned.output
    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    assert emulator.backups_started("element") == 0


def test_saved_plan_is_stale_once_someone_else_backed_up(
    workspace: Workspace, emulator: Emulator
) -> None:
    workspace.element_connection()
    prepare(emulator, "element")
    seed(emulator, "element", hours=30)
    workspace.policy("nightly", "element", spec="maxAge: 26h\nwait: 1m")
    saved = workspace.run("plan", "manifests", "--out", "nightly.plan")
    assert saved.code == 0, saved.output

    seed(emulator, "element", hours=0.5)  # someone made a backup since the plan
    applied = workspace.run("apply", "--plan", "nightly.plan")
    assert applied.code == 3, applied.output
    assert "nightly" in applied.output
    assert emulator.backups_started("element") == 0
