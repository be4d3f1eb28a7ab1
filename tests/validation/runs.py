"""Running ``converge validate`` the ways users do: through click, and as a real process.

Shared by the validation tests (imported by name: pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from click.testing import CliRunner

from controller import cli

CONVERGE = Path(sys.executable).parent / "converge"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"

# One sandbox connection per api: most cases need something to point at.
CONNECTIONS = """\
apiVersion: converge/v1
kind: Connection
metadata: {name: era-main}
spec: {api: era, url: sandbox}
---
apiVersion: converge/v1
kind: Connection
metadata: {name: element-main}
spec: {api: element, url: sandbox}
---
apiVersion: converge/v1
kind: Connection
metadata: {name: vcda-main}
spec: {api: vcda, url: sandbox}
---
apiVersion: converge/v1
kind: Connection
metadata: {name: commvault-main}
spec: {api: commvault, url: sandbox}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return self.stderr.splitlines()


def clean_environ() -> dict[str, str]:
    # The examples read ERA_URL etc.: a developer's own settings must not change the outcome.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ERA_", "ELEMENT_", "VCDA_", "COMMVAULT_", "CONVERGE_"))
    }


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> Outcome:
    """``converge validate ARGS`` in-process, through click, as the console script runs it."""
    result = CliRunner().invoke(cli.main, ["validate", *args], env=dict(env or {}))
    return Outcome(result.exit_code, result.stdout, result.stderr)


def run_process(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Outcome:
    """The installed ``converge`` in a real process: proves nothing reaches a terminal raw."""
    result = subprocess.run(
        [str(CONVERGE), "validate", *args],
        cwd=cwd,
        env={**clean_environ(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Outcome(result.returncode, result.stdout, result.stderr)
