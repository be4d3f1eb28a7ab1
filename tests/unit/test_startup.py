"""Start-up cost: the commands that need no network load none of the heavy layers.

``converge --version``, ``--help`` and ``validate`` run in a fraction of a second only
because controller/cli.py imports orchestrating (and with it httpx, the state stores,
planning) inside the commands that use it, and policies imports croniter only when a
schedule is checked. One top-level import would undo that without failing anything
else, so each case runs converge in a fresh interpreter and lists what it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"

# Run the CLI as the console script does, then report which watched modules got loaded.
# The report is the last line of stdout, after whatever the command itself printed.
_PROBE = """\
import json, sys
from controller.cli import main
sys.argv = ["converge", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
watched = json.loads(WATCHED)
print(json.dumps({"code": code, "loaded": sorted(m for m in watched if m in sys.modules)}))
"""

NETWORK = ("httpx", "controller.clients.http", "controller.orchestrating", "controller.state")
VALIDATION = ("yaml", "jsonschema", "croniter", "controller.validating")

ROLEAPPS_ONLY = """\
apiVersion: converge/v1
kind: Connection
metadata: {name: era-main}
spec: {api: era, url: sandbox}
---
apiVersion: converge/v1
kind: RoleApp
metadata: {name: chat-operator}
spec:
  folder: chat-operator
  title: Chat operator
  roles: [chatagent]
  svcscriptcode: chatagent_api
"""


def run_probe(*args: str, watched: tuple[str, ...], cwd: Path) -> tuple[int, list[str]]:
    source = _PROBE.replace("WATCHED", repr(json.dumps(watched)))
    done = subprocess.run(
        [sys.executable, "-c", source, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    return report["code"], report["loaded"]


@pytest.mark.parametrize(
    "args",
    [("--version",), ("--help",), ("plan", "--help"), ("apply", "--help"), ("state", "--help")],
    ids=" ".join,
)
def test_version_and_help_load_no_layer(args: tuple[str, ...], tmp_path: Path) -> None:
    code, loaded = run_probe(*args, watched=NETWORK + VALIDATION, cwd=tmp_path)
    assert code in (0, None)
    assert loaded == []


def test_validate_loads_no_network_layer(tmp_path: Path) -> None:
    code, loaded = run_probe("validate", str(EXAMPLES), watched=NETWORK, cwd=tmp_path)
    assert code in (0, None)
    assert loaded == []


def test_validate_without_backup_policies_loads_no_croniter(tmp_path: Path) -> None:
    (tmp_path / "estate.yaml").write_text(ROLEAPPS_ONLY, encoding="utf-8")
    code, loaded = run_probe("validate", ".", watched=("croniter", *NETWORK), cwd=tmp_path)
    assert code in (0, None)
    assert loaded == []
