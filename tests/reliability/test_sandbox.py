"""The README's first line: the example manifests applied to the built-in sandbox, then planned.

The sandbox serves all four APIs and learns the policies' applications and subclients from
the manifests; a break in either shows up here as an apply that cannot even read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"


def _converge(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_URL", "_PASSWORD"))}
    env.update({"VCDA_BACKUP_PASSWORD": "try-me", "NO_COLOR": "1"})
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_readme_examples_apply_to_the_sandbox_then_plan_no_changes(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "manifests")
    applied = _converge(tmp_path, "apply", "manifests", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "backup BackupPolicy/commvault-main/orders-dynamodb: ok" in applied.stdout
    planned = _converge(tmp_path, "plan", "manifests", "--detailed-exitcode")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "No changes." in planned.stdout
