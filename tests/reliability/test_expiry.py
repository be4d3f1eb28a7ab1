"""Expiry and refused credentials.

A session or token that expires mid-run is renewed once, transparently (the emulator's
login count goes up by exactly one). Bad credentials fail fast with a message naming the
connection and the login call, after exactly one login attempt per run: never a retry
storm, and never Era's ban after five failures.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.reliability.conftest import HOUR, SECRETS, Emulator, Workspace, wait_until

# A data call each API makes in every plan, to answer 401 once.
DATA_CALLS = {
    "era": ("GET", r"^/rest/v1/domain/roleapps$"),
    "element": ("GET", r"/dumps$"),
    "vcda": ("GET", r"^/backups$"),
    "commvault": ("POST", r"(?i)^/jobs$"),
}
LOGINS = {
    "era": "era-main: POST /rest/v1/iam/sessions",
    "element": "element-main: POST /console/sys/token",
    "vcda": "vcda-main: POST /sessions",
    "commvault": "commvault-main: POST /Login",
}
PASSWORDS = {
    "era": "ERA_PASSWORD",
    "element": "ELEMENT_CLIENT_SECRET",
    "vcda": "VCDA_PASSWORD",
    "commvault": "COMMVAULT_PASSWORD",
}


def everything(workspace: Workspace, emulator: Emulator) -> None:
    emulator.seed_sources()
    workspace.connections()
    workspace.policies()
    workspace.roleapps([f"app-{i}" for i in range(3)])


@pytest.mark.parametrize(
    ("api", "status", "body"),
    [
        *((api, 401, None) for api in sorted(DATA_CALLS)),
        ("element", 400, {"error_code": "invalid_request", "error_description": "bad token"}),
    ],
)
def test_a_session_refused_mid_run_is_renewed_once(
    workspace: Workspace, emulator: Emulator, api: str, status: int, body: object
) -> None:
    everything(workspace, emulator)
    method, path = DATA_CALLS[api]
    rule = {"method": method, "path_regex": path, "status": status, "times": 1}
    emulator.control(api, "fail", rule if body is None else {**rule, "body": body})

    planned = workspace.run("plan", "manifests")

    assert planned.code == 0, planned.output
    stats = emulator.stats(api)
    assert stats["faults_pending"]["fail"] == 0
    assert (stats["logins"], stats["failed_logins"]) == (2, 0), stats


@pytest.mark.slow
def test_every_session_expiring_during_a_slow_apply_is_renewed_once(
    workspace: Workspace, emulator: Emulator
) -> None:
    emulator.seed_sources()
    for api in ("element", "vcda", "commvault"):
        emulator.control(api, "set_duration", {"seconds": 2.5})
        emulator.control(api, "seed_backup", {"age_seconds": 30 * HOUR})
    emulator.control("server", "fault", {"latency": 0.01})
    workspace.connections()
    workspace.policies()
    workspace.roleapps([f"app-{i:03d}" for i in range(200)])
    triggers = ("POST /rest/v1/domain/roleapps", "POST /backups", "POST /CreateTask")

    def era_is_mid_run() -> bool:
        return emulator.stats("era")["calls"].get(triggers[0], 0) >= 40

    def backups_are_running() -> bool:
        calls = {api: emulator.stats(api)["calls"] for api in ("vcda", "commvault")}
        dumps = emulator.stats("element")["calls"]
        return (
            calls["vcda"].get(triggers[1], 0) >= 1
            and calls["commvault"].get(triggers[2], 0) >= 1
            and any(c.startswith("POST ") and c.endswith("/dumps") for c in dumps)
        )

    log = workspace.root / "apply.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            workspace.command("apply", "manifests", "--auto-approve"),
            cwd=workspace.root,
            env=workspace.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            # Bounded waits for each moment; then every session of that API expires at once.
            assert wait_until(process, era_is_mid_run), log.read_text()[-3000:]
            emulator.control("era", "expire_sessions")
            assert wait_until(process, backups_are_running), log.read_text()[-3000:]
            for api in ("element", "vcda", "commvault"):
                emulator.control(api, "expire_sessions")
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    output = log.read_text()

    assert process.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    for api in ("era", "element", "vcda", "commvault"):
        stats = emulator.stats(api)
        assert (stats["logins"], stats["failed_logins"]) == (2, 0), (api, stats)
    assert emulator.folders() == {f"app-{i:03d}": 1 for i in range(200)}


@pytest.mark.parametrize("api", sorted(LOGINS))
def test_bad_credentials_fail_fast_with_one_login_attempt(
    workspace: Workspace, emulator: Emulator, api: str
) -> None:
    everything(workspace, emulator)
    workspace.env[PASSWORDS[api]] = "wrong-" + SECRETS[PASSWORDS[api]][::-1]
    runs = 3 if api == "era" else 1  # three runs: still below Era's ban at five

    for attempt in range(1, runs + 1):
        applied = workspace.run("apply", "manifests", "--auto-approve")
        assert applied.code == 1, applied.output
        assert LOGINS[api] in applied.stderr, applied.stderr
        stats = emulator.stats(api)
        assert stats["failed_logins"] == attempt, stats
        assert stats["logins"] == 0
        assert stats["total"] == attempt, stats["calls"]  # the login, nothing else
    assert emulator.folders() == {}, "nothing is applied when a login is refused"

    # Not banned: the right password works at once.
    workspace.env[PASSWORDS[api]] = SECRETS[PASSWORDS[api]]
    assert workspace.run("plan", "manifests").code == 0
