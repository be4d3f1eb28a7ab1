"""Backup secrets end to end, and the README's first command on the examples.

The vcda backup file's password and every connection credential appear in no output,
plan file or state byte; a vcda trigger without its password stops apply before any backup
starts, while ``validate`` and ``plan`` do without it; and the example manifests apply to
the built-in sandbox and then plan clean.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

from tests.e2e.conftest import (
    SECRETS,
    Emulator,
    Workspace,
    assert_no_secrets,
    assert_no_secrets_in_files,
)
from tests.e2e.test_backups import PRODUCTS, prepare, seed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
# What the clients derive from secrets and send: also never to be shown or stored.
DERIVED = (
    base64.b64encode(SECRETS["COMMVAULT_PASSWORD"].encode()).decode(),
    base64.b64encode(f"converge:{SECRETS['ELEMENT_CLIENT_SECRET']}".encode()).decode(),
)


def overdue_everywhere(workspace: Workspace, emulator: Emulator) -> None:
    for api in PRODUCTS:
        workspace.backup_connection(api)
        prepare(emulator, api)
        seed(emulator, api, hours=30)
        workspace.policy(f"{api}-backup", api, spec="maxAge: 26h\nwait: 1m")


def test_no_secret_in_any_output_plan_file_or_state(
    workspace: Workspace, emulator: Emulator
) -> None:
    overdue_everywhere(workspace, emulator)
    # A failure's report must not carry the backup password either.
    emulator.control("vcda", "fail_next_backup", {"message": "appliance disk is read-only"})

    outputs = [
        workspace.run("validate", "manifests"),
        workspace.run("plan", "manifests", "-v"),
        workspace.run("plan", "manifests", "--format", "json"),
        workspace.run("plan", "manifests", "--format", "markdown"),
    ]
    saved = workspace.run("plan", "manifests", "--out", "backups.plan")
    assert saved.code == 0, saved.output
    applied = workspace.run("apply", "--plan", "backups.plan", "-v", "--format", "json")
    assert applied.code == 5, applied.output  # vcda failed, element and commvault did not
    again = workspace.run("apply", "manifests", "--auto-approve", "-v")  # vcda once more
    assert again.code == 0, again.output
    outputs += [saved, applied, again, workspace.run("state", "list")]

    texts = [r.output for r in outputs]
    assert_no_secrets(*texts)
    for text in texts:
        for value in DERIVED:
            assert value not in text
    written = workspace.written_files()
    assert (workspace.root / "backups.plan") in written
    assert any(p.name == "state.db" for p in written)
    assert_no_secrets_in_files(written)
    for path in written:
        for value in DERIVED:
            assert value.encode() not in path.read_bytes(), path


def test_missing_vcda_backup_password_stops_apply_but_not_validate_or_plan(
    workspace: Workspace, emulator: Emulator
) -> None:
    overdue_everywhere(workspace, emulator)
    del workspace.env["VCDA_BACKUP_PASSWORD"]

    validated = workspace.run("validate", "manifests")
    assert validated.code == 0, validated.output
    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 2, planned.output
    assert "backup BackupPolicy vcda-backup" in planned.stdout

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 1, applied.output
    assert "VCDA_BACKUP_PASSWORD" in applied.output
    # Refused before any backup started, on every product, not only vcda.
    assert [emulator.backups_started(api) for api in PRODUCTS] == [0, 0, 0]


def test_examples_apply_to_the_sandbox_then_plan_clean(tmp_path: Path) -> None:
    """The README's first command: no account, only VCDA_BACKUP_PASSWORD set."""
    workspace = Workspace(tmp_path, None)
    shutil.rmtree(workspace.manifests)
    shutil.copytree(EXAMPLES, workspace.manifests)
    for name in SECRETS:
        workspace.env.pop(name, None)
    workspace.env["VCDA_BACKUP_PASSWORD"] = "try-me"

    applied = workspace.run("apply", "manifests", "--auto-approve")
    assert applied.code == 0, applied.output
    assert "0 failed" in applied.stdout
    planned = workspace.run("plan", "manifests", "--detailed-exitcode")
    assert planned.code == 0, planned.output
    assert "No changes." in planned.stdout
    assert "try-me" not in applied.output + planned.output
    for path in workspace.written_files():
        assert b"try-me" not in path.read_bytes(), path
