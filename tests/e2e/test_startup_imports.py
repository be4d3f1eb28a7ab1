"""Start-up cost of plan and apply: plain-http runs load no TLS, zip, e-mail, tz or idna.

``ssl`` (~15 ms), ``email.utils`` (~13 ms), ``zipfile`` (~5 ms), ``zoneinfo`` (~3 ms) and
the ``idna`` codec (~2.5 ms) are imported where they are needed (an https connection, an
HTTP-date Retry-After, a directory or .zip archive, a policy's schedule or timezone, a
host name that is not ASCII: an ASCII one goes to the resolver and to TLS as bytes),
because issue 7's apply target counts every millisecond before the first call. One
top-level import would undo that without failing anything else, so this runs converge as
a user would, with ``-X importtime``, and reads the modules it loaded.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Workspace

LAZY = ("ssl", "email.utils", "zipfile", "zoneinfo", "encodings.idna")


def loaded_modules(workspace: Workspace, *args: str) -> tuple[int, set[str]]:
    done = workspace.run(*args, python_flags=("-X", "importtime"))
    # "import time: self [us] | cumulative | imported package", one line per module.
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "controller.orchestrating" in modules, done.stderr[-2000:]
    return done.code, modules


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_plain_http_run_loads_no_tls_zip_email_tz_or_idna(
    workspace: Workspace, command: str
) -> None:
    workspace.era_connection()
    workspace.roleapp("chat-operator", extra="title: Chat\nroles: [chatagent]")
    args = [command, "manifests"] + (["--auto-approve"] if command == "apply" else [])

    code, modules = loaded_modules(workspace, *args)

    assert code == 0
    assert sorted(modules & set(LAZY)) == []


def test_directory_archive_still_loads_zipfile(workspace: Workspace) -> None:
    # The lazy import must still happen where it is needed: a directory is zipped to plan.
    (workspace.root / "site").mkdir()
    (workspace.root / "site" / "index.html").write_text("<p>hello</p>", encoding="utf-8")
    workspace.era_connection()
    workspace.roleapp("portal", extra="title: Portal\narchive: ../../site")

    code, modules = loaded_modules(workspace, "plan", "manifests", "--detailed-exitcode")

    assert code == 2
    assert "zipfile" in modules
