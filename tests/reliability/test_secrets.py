"""Secrets: every command and format, scanned for every credential, token and backup password.

Distinctive values for the four APIs' credentials and the vcda backup password go in
through the environment; then validate, plan (every format, --out), apply (text, json,
from a saved plan), drift (every format, --output), state list/show run at -v and -vv,
with a session expiring and a call failing on the way so that retries, renewals and
error messages are logged too. Nothing converge writes — stdout, stderr, plan files,
reports, the state database — may contain a secret, a session token or an auth header.
"""

from __future__ import annotations

import base64
import re

import pytest

from tests.reliability.conftest import HOUR, SECRETS, Emulator, Result, Workspace

# A Bearer or Commvault token value, an X-VCAV-Auth value, a Basic credential.
TOKEN_PATTERNS = re.compile(
    r"Bearer [A-Za-z0-9._~+/=-]{8,}|QSDK [0-9a-f]{8,}|Basic [A-Za-z0-9+/=]{8,}"
)


def forbidden() -> dict[str, bytes]:
    values = dict(SECRETS)
    # The forms the clients derive from them: commvault's base64 password, element's Basic.
    values["COMMVAULT_PASSWORD (base64)"] = base64.b64encode(
        SECRETS["COMMVAULT_PASSWORD"].encode()
    ).decode()
    values["ELEMENT_BASIC"] = base64.b64encode(
        f"converge:{SECRETS['ELEMENT_CLIENT_SECRET']}".encode()
    ).decode()
    return {name: value.encode() for name, value in values.items()}


@pytest.mark.slow
def test_no_secret_in_any_output_file_or_state(workspace: Workspace, emulator: Emulator) -> None:
    emulator.seed_sources()
    for api in ("element", "vcda", "commvault"):
        emulator.control(api, "seed_backup", {"age_seconds": 30 * HOUR})
    workspace.connections()
    workspace.policies(wait="1m")
    workspace.roleapps(["app-0", "app-1"])
    outputs: list[Result] = []

    def run(*args: str) -> Result:
        result = workspace.run(*args)
        outputs.append(result)
        return result

    for verbosity in ("-v", "-vv"):
        run("validate", "manifests", verbosity)
        for fmt in ("text", "json", "markdown"):
            out = f"plan-{fmt}{verbosity}.json"
            assert run("plan", "manifests", "--format", fmt, "--out", out, verbosity).code == 0
    # A session that expires and a call that fails on the way: renewals and retries logged.
    emulator.control("era", "expire_sessions")
    emulator.control("vcda", "fail", {"method": "GET", "path_regex": "^/backups$", "status": 503})
    assert run("apply", "--plan", "plan-json-vv.json", "-vv").code == 0
    workspace.roleapps(["app-0", "app-1", "app-2"])
    assert run("apply", "manifests", "--auto-approve", "--format", "json", "-vv").code == 0
    workspace.roleapps(["app-0", "app-1", "app-2"], title="Changed")
    assert run("apply", "manifests", "--auto-approve", "-v").code == 0
    emulator.control("era", "edit", {"id": emulator.roleapps()[0]["id"], "fields": {"title": "x"}})
    for verbosity in ("-v", "-vv"):
        for fmt in ("text", "json", "markdown", "junit"):
            report = f"drift-{fmt}{verbosity}.out"
            drift = run("drift", "manifests", "--format", fmt, "--output", report, verbosity)
            assert drift.code in (0, 2), drift.output
        run("state", "list", verbosity)
        run("state", "list", "--format", "json", verbosity)
        run("state", "show", "app-0", verbosity)
    # A refused login's error message, at -vv.
    workspace.env["ERA_PASSWORD"] = SECRETS["ERA_PASSWORD"] + "-wrong"
    assert run("plan", "manifests", "-vv").code == 1

    assert any("GET" in r.stderr for r in outputs), "-vv logged no request lines"
    files = workspace.written_files()
    assert any(p.name == "state.db" for p in files)
    assert any(p.name.startswith("drift-") for p in files)
    scanned = [(f"output of run {i}", r.output.encode()) for i, r in enumerate(outputs)]
    scanned += [(str(p), p.read_bytes()) for p in files]
    for where, data in scanned:
        for name, value in forbidden().items():
            assert value not in data, f"{name} leaked into {where}"
        text = data.decode("utf-8", "replace")
        assert not TOKEN_PATTERNS.search(text), f"a token leaked into {where}"
