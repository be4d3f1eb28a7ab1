"""Team state on PostgreSQL, end to end: concurrent applies and a killed apply.

Two `converge apply` processes share one PostgreSQL state and one emulator: the lock lets
one apply while the other waits and exits 4 (or applies after, finding nothing to do) —
never a doubled create, counted on the server. A SIGKILLed apply's advisory lock goes
with its connection, so the next apply runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Workspace, assert_no_secrets

OBJECTS = 40
pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    return str(pg_server.create_database(f"e2e_{uuid.uuid4().hex[:10]}"))


def _estate(workspace: Workspace) -> None:
    workspace.era_connection()
    for i in range(OBJECTS):
        workspace.roleapp(f"app-{i:03d}", extra=f"title: App {i}")
    # Slow the server so that both processes are really applying at the same time.
    workspace.emulator.control("server", "fault", {"latency": 0.1})


def _start_apply(workspace: Workspace, url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "apply",
            "manifests",
            "--auto-approve",
            "--state",
            url,
            *extra,
        ],
        cwd=workspace.root,
        env=workspace.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _folders(workspace: Workspace) -> list[str]:
    return sorted(r["folder"] for r in workspace.emulator.roleapps())


def test_two_applies_at_once_never_double_create(workspace: Workspace, pg_url: str) -> None:
    _estate(workspace)
    # Two at a time at 100 ms a call: the first holds the lock for a few seconds.
    first = _start_apply(workspace, pg_url, "--parallelism", "2")
    time.sleep(0.3)  # let the first take the lock; the second then finds it held
    second = _start_apply(workspace, pg_url, "--lock-timeout", "0s")
    outputs = [p.communicate(timeout=180) for p in (first, second)]
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 4], outputs
    loser = outputs[[first.returncode, second.returncode].index(4)]
    assert "locked by" in loser[1] and "since" in loser[1], loser
    folders = _folders(workspace)
    assert len(folders) == OBJECTS and len(set(folders)) == OBJECTS
    for out, err in outputs:
        assert_no_secrets(out, err)
        assert "Pw-s3cret" not in out + err  # the state URL's password is never printed

    # A waiting apply, given time, runs after the first and has nothing left to do.
    again = workspace.run(
        "apply", "manifests", "--auto-approve", "--state", pg_url, "--lock-timeout", "30s"
    )
    assert again.code == 0, again.output
    assert len(_folders(workspace)) == OBJECTS


def test_a_killed_apply_leaves_no_lock_behind(workspace: Workspace, pg_url: str) -> None:
    _estate(workspace)
    victim = _start_apply(workspace, pg_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not workspace.emulator.roleapps():
        time.sleep(0.05)  # kill it mid-apply: some objects created, the lock held
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)

    # No advisory lock survives the dead connection (give the server a moment to notice).
    with psycopg.connect(pg_url) as conn:
        for _ in range(50):
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            ).fetchone()
            if held == (0,):
                break
            time.sleep(0.1)
        assert held == (0,)

    recovered = workspace.run("apply", "manifests", "--auto-approve", "--state", pg_url)
    assert recovered.code == 0, recovered.output
    folders = _folders(workspace)
    assert len(folders) == OBJECTS and len(set(folders)) == OBJECTS
    listed = workspace.run("state", "list", "--format", "json", "--state", pg_url)
    assert listed.code == 0 and len(listed.json()) == OBJECTS
