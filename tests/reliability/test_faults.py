"""Faulty servers: an apply through 503s, 429s, dropped connections and jittery latency.

Every call of every API is exposed to the server-wide faults (10% 503, 5% 429 with
Retry-After, 2% connections dropped without an answer, latency with jitter). The apply
must converge — at most one re-run — with no duplicate anywhere (counted on the server:
roleapps per folder, backups per policy) and nothing deleted that was not pruned on
purpose (seeded unmanaged objects survive).
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import HOUR, Emulator, Result, Workspace, unmanaged_roleapps

ROLEAPPS = 500
PRUNED = 10
UNMANAGED = 20
FAULTS = {
    "error_rate": 0.10,
    "rate_429": 0.05,
    "retry_after": 1,
    "drop_rate": 0.02,
    "latency": 0.002,
    "jitter": 0.004,
    "seed": 2,
}


def apply_converges(workspace: Workspace) -> list[Result]:
    """``apply``, and once more if the first run did not finish everything."""
    runs = [workspace.run("apply", "manifests", "--auto-approve", "--parallelism", "16")]
    if runs[0].code != 0:
        runs.append(workspace.run("apply", "manifests", "--auto-approve", "--parallelism", "16"))
    assert runs[-1].code == 0, "\n----\n".join(r.output[-3000:] for r in runs)
    return runs


def assert_no_duplicates(emulator: Emulator, expected_folders: set[str]) -> None:
    folders = emulator.folders()
    duplicated = {f: n for f, n in folders.items() if n > 1}
    assert not duplicated, f"duplicate roleapps: {duplicated}"
    assert set(folders) == expected_folders


@pytest.mark.slow
def test_apply_through_server_faults_converges_without_duplicates_or_stray_deletes(
    workspace: Workspace, emulator: Emulator
) -> None:
    emulator.seed_sources()
    hand_made = unmanaged_roleapps(UNMANAGED)
    emulator.control("era", "seed", {"roleapps": hand_made})
    # Someone else's old backups: due policies, and objects that must survive.
    emulator.control("element", "seed_backup", {"age_seconds": 30 * HOUR, "include_users": True})
    emulator.control("vcda", "seed_backup", {"age_seconds": 30 * HOUR})
    emulator.control("commvault", "seed_backup", {"age_seconds": 30 * HOUR})
    before = emulator.backups()
    names = [f"app-{i:03d}" for i in range(ROLEAPPS)]
    workspace.connections()
    workspace.policies()
    workspace.roleapps(names)
    emulator.control("server", "fault", FAULTS)

    runs = apply_converges(workspace)

    unmanaged = {r["folder"] for r in hand_made}
    assert_no_duplicates(emulator, set(names) | unmanaged)
    # One backup per policy, however many triggers were lost or refused on the way.
    assert emulator.backups() == {api: n + 1 for api, n in before.items()}, runs[-1].output
    injected = emulator.server.faults.stats()
    assert injected["error_503"] and injected["rate_429"] and injected["dropped"], injected

    # Prune on purpose (faults still on): only the removed manifests' objects go.
    kept = names[PRUNED:]
    workspace.roleapps(kept, title="Renamed")
    apply_converges(workspace)
    assert_no_duplicates(emulator, set(kept) | unmanaged)
    titles = {r["folder"]: r["title"] for r in emulator.roleapps()}
    assert all(titles[n] == f"Renamed {n}" for n in kept)
    assert all(titles[r["folder"]] == r["title"] for r in hand_made)
    assert emulator.backups() == {api: n + 1 for api, n in before.items()}
    assert set(workspace.inventory()) == set(kept)

    emulator.control("server", "reset_faults")
    again = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert again.code == 0, again.output
