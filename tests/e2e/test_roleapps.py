"""Issue 3, "Roleapps end to end": the `converge` CLI against the Era emulator over HTTP.

Every test drives the real program (a subprocess, as a user runs it) and checks three
things: the exit code, what it printed, and what the server holds afterwards (read over
the emulator's API or its control plane). Every run's output, every saved plan and the
state database are scanned for the secrets in ``conftest.SECRETS``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from controller.emulator import build_apis
from controller.state import open_store
from tests.e2e.conftest import (
    ELEMENT_APP,
    SECRETS,
    Emulator,
    Result,
    Workspace,
    assert_no_secrets,
    assert_no_secrets_in_files,
)

REPO = Path(__file__).resolve().parents[2]
ROLEAPPS = "/rest/v1/domain/roleapps"


@pytest.fixture
def ws(workspace: Workspace) -> Iterator[Workspace]:
    """The workspace, with one era Connection; after the test, no file converge wrote
    (state database, saved plans) holds a secret."""
    workspace.era_connection()
    yield workspace
    assert_no_secrets_in_files(workspace.written_files())


def converge(ws: Workspace, *args: str) -> Result:
    """Run converge with no terminal on stdin; its output must never hold a secret."""
    result = ws.run(*args, input="")
    assert_no_secrets(result.stdout, result.stderr)
    return result


def expect(result: Result, code: int) -> Result:
    assert result.code == code, f"exit {result.code}, expected {code}:\n{result.output}"
    return result


def live(emulator: Emulator) -> dict[str, dict[str, Any]]:
    """Every live roleapp by folder (folders are unique in these tests)."""
    objects = emulator.roleapps()
    by_folder = {o["folder"]: o for o in objects}
    assert len(by_folder) == len(objects), "two live roleapps share a folder"
    return by_folder


def create_id(name: str, connection: str = "era-main") -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"converge:{connection}/{name}"))


def era_stats(emulator: Emulator) -> dict[str, Any]:
    return emulator.control("era", "stats")


def calls(emulator: Emulator, key: str) -> int:
    return era_stats(emulator)["calls"].get(key, 0)


def writes(emulator: Emulator) -> dict[str, int]:
    """Calls that change roleapps, by method and path template."""
    return {
        key: count
        for key, count in era_stats(emulator)["calls"].items()
        if key.split()[0] in ("POST", "PATCH", "PUT", "DELETE") and "/iam/" not in key
    }


def _login(emulator: Emulator) -> str:
    response = emulator.http.post(
        "/era/rest/v1/iam/sessions",
        json={
            "domain": "sandbox.era",
            "login": "converge",
            "pwd": SECRETS["ERA_PASSWORD"],
            "session_type": "api",
        },
    )
    return str(response.json()["session_token"])


def inventory(ws: Workspace) -> dict[str, str]:
    store = open_store(f"sqlite:///{ws.root}/.converge/state.db")
    try:
        return {e.name: e.id for e in store.inventory("RoleApp")}
    finally:
        store.close()


def plan_json(ws: Workspace, *args: str) -> dict[str, Any]:
    return expect(converge(ws, "plan", "manifests", "--format", "json", *args), 0).json()


def actions(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["action"], a["name"]) for a in doc["actions"]]


# -- create, update, idempotence, prune -----------------------------------------------------


def test_create_update_prune_and_idempotent_replan(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp(
        "alpha",
        extra="""
        title: Alpha one
        roles: [chatagent, supervisor]
        svcscriptcode: alpha_api
        opts: {comment: "", recv_timeout: 30, visible: true}
        """,
    )
    ws.roleapp("beta", extra="title: Beta")

    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert "+ create RoleApp alpha" in planned.stdout
    assert "Plan: 2 to create" in planned.stdout
    assert era_stats(emulator)["roleapps"] == 0, "plan wrote to the server"

    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    # Read before live() below, which opens sessions of its own.
    assert era_stats(emulator)["sessions"] == 0, "a run did not log out"
    objects = live(emulator)
    assert set(objects) == {"alpha", "beta"}
    alpha = objects["alpha"]
    assert alpha["id"] == create_id("alpha")  # the deterministic id of manifests.md
    assert (alpha["title"], alpha["svcscriptcode"]) == ("Alpha one", "alpha_api")
    assert sorted(alpha["roles"]) == ["chatagent", "supervisor"]
    assert alpha["opts"]["recv_timeout"] == 30 and alpha["opts"]["visible"] is True
    assert inventory(ws) == {"alpha": create_id("alpha"), "beta": create_id("beta")}

    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)

    # A title changed in git: one update, of that field only, then nothing again.
    ws.roleapp(
        "alpha",
        extra="""
        title: Alpha two
        roles: [supervisor, chatagent]
        svcscriptcode: alpha_api
        opts: {comment: "", recv_timeout: 30, visible: true}
        """,
    )
    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert "~ update RoleApp alpha" in planned.stdout
    assert 'title: "Alpha one" → "Alpha two"' in planned.stdout
    assert "Plan: 0 to create, 1 to update, 0 to delete" in planned.stdout
    patches_before = calls(emulator, f"PATCH {ROLEAPPS}/{{id}}")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert calls(emulator, f"PATCH {ROLEAPPS}/{{id}}") == patches_before + 1
    objects = live(emulator)
    assert objects["alpha"]["title"] == "Alpha two"
    assert objects["beta"]["title"] == "Beta"
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)

    # A manifest removed: --no-prune plans and applies nothing; a plain apply deletes it.
    ws.remove("roleapps/beta.yaml")
    expect(converge(ws, "plan", "manifests", "--no-prune", "--detailed-exitcode"), 0)
    expect(converge(ws, "apply", "manifests", "--no-prune", "--auto-approve"), 0)
    assert "beta" in live(emulator)
    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert f"- delete RoleApp beta  ({create_id('beta')})" in planned.stdout
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert set(live(emulator)) == {"alpha"}
    assert inventory(ws) == {"alpha": create_id("alpha")}
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


# -- adoption, unmanaged objects ------------------------------------------------------------


def test_adopt_by_folder_and_never_delete_unmanaged(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    legacy_id, other_id = emulator.control(
        "era",
        "seed",
        {
            "roleapps": [
                {"folder": "legacy", "title": "Old title", "roles": ["admin"]},
                {"folder": "someone-else", "title": "Someone's app"},
            ]
        },
    )["ids"]
    ws.roleapp("legacy", extra="title: New title")

    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert f"<= adopt RoleApp legacy  ({legacy_id})" in planned.stdout
    assert 'title: "Old title" → "New title"' in planned.stdout
    assert "1 live object(s) not managed by converge" in planned.stdout
    assert f"? era-main  {other_id}  Someone's app" in planned.stdout
    assert "create" not in planned.stdout.split("Plan:")[0]

    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    objects = live(emulator)
    assert set(objects) == {"legacy", "someone-else"}, "adopting created a duplicate"
    assert objects["legacy"]["id"] == legacy_id
    assert objects["legacy"]["title"] == "New title"
    assert objects["legacy"]["roles"] == ["admin"], "a field the manifest omits was touched"
    assert inventory(ws) == {"legacy": legacy_id}
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)

    # Adopted means managed: its manifest gone, it is pruned; the unmanaged one never is.
    ws.remove("roleapps/legacy.yaml")
    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert f"- delete RoleApp legacy  ({legacy_id})" in planned.stdout
    assert other_id not in planned.stdout.split("live object(s) not managed")[0]
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    objects = live(emulator)
    assert set(objects) == {"someone-else"}
    assert objects["someone-else"]["id"] == other_id
    assert inventory(ws) == {}


def test_more_roleapps_than_the_page_cap_are_all_seen(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    emulator.control("era", "set_page_cap", {"page_cap": 50})
    emulator.control(
        "era",
        "seed",
        {"roleapps": [{"folder": f"seeded-{i:03d}", "title": f"S{i}"} for i in range(130)]},
    )
    for i in range(5):
        ws.roleapp(f"managed-{i}", extra=f"title: M{i}")

    planned = expect(converge(ws, "plan", "manifests"), 0)
    assert "Plan: 5 to create, 0 to update" in planned.stdout
    assert "130 live object(s) not managed by converge" in planned.stdout

    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    objects = live(emulator)
    assert len(objects) == 135
    assert era_stats(emulator)["roleapps"] == 135

    # 135 objects in pages of at most 50: the second run must find all five on later pages.
    gets_before = calls(emulator, f"GET {ROLEAPPS}")
    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)
    assert "130 live object(s) not managed by converge" in planned.stdout
    assert calls(emulator, f"GET {ROLEAPPS}") - gets_before >= 4  # 50 + 50 + 35 + empty
    assert calls(emulator, f"POST {ROLEAPPS}") == 5


# -- archives -------------------------------------------------------------------------------


def _attachment(emulator: Emulator, roleapp_id: str) -> bytes:
    token = _login(emulator)
    response = emulator.http.get(
        f"/era{ROLEAPPS}/{roleapp_id}/attachment", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return response.content


def test_directory_archive_is_uploaded_once_and_again_when_it_changes(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    app = ws.manifests / "roleapps" / "app"
    (app / "static").mkdir(parents=True)
    (app / "index.html").write_text("<h1>hello</h1>\n", encoding="utf-8")
    (app / "static" / "app.js").write_text("console.log(1)\n", encoding="utf-8")
    ws.roleapp("portal", extra="title: Portal\narchive: app")

    planned = expect(converge(ws, "plan", "manifests"), 0)
    assert "^ archive RoleApp portal" in planned.stdout
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)

    portal = live(emulator)["portal"]
    uploaded = _attachment(emulator, portal["id"])
    assert portal["opts"]["attachment_info"]["hasha"] == (
        "md5;" + hashlib.md5(uploaded).hexdigest().upper()
    )
    with zipfile.ZipFile(io.BytesIO(uploaded)) as archive:
        assert archive.namelist() == ["index.html", "static/app.js"]
        assert archive.read("static/app.js") == b"console.log(1)\n"

    # The same tree zips to the same bytes: nothing to upload, even after touching mtimes.
    time.sleep(0.01)
    (app / "index.html").touch()
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)

    (app / "index.html").write_text("<h1>hello, again</h1>\n", encoding="utf-8")
    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert "^ archive RoleApp portal" in planned.stdout
    assert "archive md5 differs" in planned.stdout
    assert "update" not in planned.stdout.split("Plan:")[0]
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    portal = live(emulator)["portal"]
    uploaded = _attachment(emulator, portal["id"])
    assert portal["opts"]["attachment_info"]["hasha"] == (
        "md5;" + hashlib.md5(uploaded).hexdigest().upper()
    )
    with zipfile.ZipFile(io.BytesIO(uploaded)) as archive:
        assert archive.read("index.html") == b"<h1>hello, again</h1>\n"
    assert calls(emulator, f"PUT {ROLEAPPS}/{{id}}/attachment") == 2
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


# -- drift made on the server, ignoreFields, stale saved plans ----------------------------


def test_server_edit_is_an_update_unless_ignored(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp(
        "desk",
        extra="""
        title: Desk
        opts: {comment: "", recv_timeout: 30}
        lifecycle: {ignoreFields: [opts.comment]}
        """,
    )
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    desk_id = create_id("desk")

    # Someone annotates it by hand (ignored) and retitles it (drift).
    emulator.control(
        "era", "edit", {"id": desk_id, "fields": {"opts.comment": "by hand", "title": "Hacked"}}
    )
    doc = plan_json(ws)
    assert actions(doc) == [("update", "desk")]
    assert doc["actions"][0]["id"] == desk_id
    assert doc["actions"][0]["changes"] == [{"path": "title", "before": "Hacked", "after": "Desk"}]
    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert 'title: "Hacked" → "Desk"' in planned.stdout
    assert "comment" not in planned.stdout

    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    desk = live(emulator)["desk"]
    assert desk["title"] == "Desk"
    assert desk["opts"]["comment"] == "by hand", "an ignored field was overwritten"

    # An edit to the ignored field alone is no drift at all.
    emulator.control("era", "edit", {"id": desk_id, "fields": {"opts.comment": "again"}})
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


def test_stale_saved_plan_is_refused_and_a_fresh_one_applies(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("desk", extra="title: Desk\nsvcscriptcode: desk_api")
    ws.roleapp("other", extra="title: Other")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    desk_id = create_id("desk")

    ws.roleapp("desk", extra="title: Desk v2\nsvcscriptcode: desk_api")
    ws.roleapp("other", extra="title: Other v2")
    expect(converge(ws, "plan", "manifests", "--out", "plan.json"), 0)
    saved = json.loads((ws.root / "plan.json").read_text(encoding="utf-8"))
    assert sorted(actions(saved)) == [("update", "desk"), ("update", "other")]

    # A change on the server after the plan, to a field the manifest does not even manage.
    emulator.control("era", "edit", {"id": desk_id, "fields": {"roles": ["intruder"]}})
    before = live(emulator)
    writes_before = writes(emulator)
    stale = expect(converge(ws, "apply", "--plan", "plan.json", "manifests"), 3)
    assert "RoleApp/era-main/desk" in stale.stderr
    assert "RoleApp/era-main/other" not in stale.stderr
    assert "stale" in stale.stderr
    assert live(emulator) == before, "a stale plan changed the server"
    assert writes(emulator) == writes_before

    # A fresh saved plan applies with no terminal and no --auto-approve: it was reviewed.
    expect(converge(ws, "plan", "manifests", "--out", "plan2.json"), 0)
    expect(converge(ws, "apply", "--plan", "plan2.json", "manifests"), 0)
    objects = live(emulator)
    assert objects["desk"]["title"] == "Desk v2"
    assert objects["desk"]["roles"] == ["intruder"], "an unmanaged field was touched"
    assert objects["other"]["title"] == "Other v2"
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


def test_a_saved_plan_whose_archive_changed_is_stale(ws: Workspace) -> None:
    """The reviewed archive is the one uploaded, or nothing is: not the object without it."""
    emulator = ws.emulator
    assert emulator is not None
    app = ws.manifests / "roleapps" / "app"
    app.mkdir(parents=True)
    (app / "index.html").write_text("reviewed\n", encoding="utf-8")
    ws.roleapp("portal", extra="title: Portal\narchive: app")
    expect(converge(ws, "plan", "manifests", "--out", "plan.json"), 0)

    (app / "index.html").write_text("not reviewed\n", encoding="utf-8")
    stale = expect(converge(ws, "apply", "--plan", "plan.json", "manifests"), 3)
    assert "RoleApp/era-main/portal" in stale.stderr and "archive" in stale.stderr
    assert era_stats(emulator)["roleapps"] == 0, "a stale plan created the object"
    assert writes(emulator) == {}


# -- safety guards --------------------------------------------------------------------------


def test_prevent_destroy_and_max_deletes(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("vault", extra="title: Vault\nlifecycle: {preventDestroy: true}")
    ws.roleapp("one", extra="title: One")
    ws.roleapp("two", extra="title: Two")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)

    ws.remove("roleapps/vault.yaml")
    refused = expect(converge(ws, "plan", "manifests"), 4)
    assert "preventDestroy" in refused.output and "RoleApp/era-main/vault" in refused.output
    refused = expect(converge(ws, "apply", "manifests", "--auto-approve"), 4)
    assert "preventDestroy" in refused.stderr
    assert "vault" in live(emulator)

    # The two-step change: back with preventDestroy: false, applied, then removed.
    ws.roleapp("vault", extra="title: Vault\nlifecycle: {preventDestroy: false}")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    ws.remove("roleapps/vault.yaml")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert set(live(emulator)) == {"one", "two"}

    # Two deletes against a budget of one: refused whole.
    ws.remove("roleapps/one.yaml")
    ws.remove("roleapps/two.yaml")
    refused = expect(converge(ws, "apply", "manifests", "--auto-approve", "--max-deletes", "1"), 4)
    assert "--max-deletes 1" in refused.stderr
    assert set(live(emulator)) == {"one", "two"}
    assert calls(emulator, f"DELETE {ROLEAPPS}/{{id}}") == 1  # the vault, earlier


# -- failures and recovery ------------------------------------------------------------------


def test_one_failing_action_does_not_stop_the_others(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("ok", extra="title: OK")
    ws.roleapp("flaky", extra="title: Flaky")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)

    ws.roleapp("ok", extra="title: OK v2")
    ws.roleapp("flaky", extra="title: Flaky v2")
    ws.roleapp("fresh", extra="title: Fresh")
    # The PATCH of one object answers 503 as often as the client retries (5 attempts),
    # and the create answers 500 for each of its rounds (3, each checked with LOOKUP).
    emulator.control(
        "era",
        "fail",
        {"method": "PATCH", "path_regex": f"{create_id('flaky')}$", "status": 503, "times": 5},
    )
    emulator.control(
        "era", "fail", {"method": "POST", "path_regex": f"{ROLEAPPS}$", "status": 500, "times": 3}
    )
    partial = expect(converge(ws, "apply", "manifests", "--auto-approve"), 5)
    assert "Failed actions:" in partial.stdout
    assert "update RoleApp/era-main/flaky: FAILED" in partial.stdout
    assert "create RoleApp/era-main/fresh: FAILED" in partial.stdout
    assert "RoleApp/era-main/ok: FAILED" not in partial.stdout
    assert "1 succeeded, 2 failed" in partial.stdout
    objects = live(emulator)
    assert objects["ok"]["title"] == "OK v2"
    assert objects["flaky"]["title"] == "Flaky"
    assert "fresh" not in objects
    assert era_stats(emulator)["faults_pending"]["fail"] == 0, "the faults outlived the run"

    # The fault has cleared: the next run converges the rest.
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    objects = live(emulator)
    assert objects["flaky"]["title"] == "Flaky v2"
    assert objects["fresh"]["title"] == "Fresh"
    assert calls(emulator, f"POST {ROLEAPPS}") == 2 + 3 + 1
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


def test_a_permanent_error_fails_its_object_only(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("ok", extra="title: OK")
    ws.roleapp("bad", extra="title: Bad")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    ws.roleapp("ok", extra="title: OK v2")
    ws.roleapp("bad", extra="title: Bad v2")
    emulator.control(
        "era",
        "fail",
        {
            "method": "PATCH",
            "path_regex": f"{create_id('bad')}$",
            "status": 400,
            # A server that echoes what it was sent, secrets included.
            "body": {
                "error_code": 1400,
                "error_message": f"title is not allowed today (pwd={SECRETS['ERA_PASSWORD']})",
            },
        },
    )
    partial = expect(
        converge(ws, "apply", "manifests", "--auto-approve", "--format", "json", "-vv"), 5
    )
    report = partial.json()
    outcomes = {r["name"]: (r["outcome"], r["message"]) for r in report["results"]}
    assert outcomes["ok"] == ("succeeded", f"updated {create_id('ok')}")
    assert outcomes["bad"][0] == "failed"
    assert "HTTP 400" in outcomes["bad"][1] and "title is not allowed today" in outcomes["bad"][1]
    assert live(emulator)["bad"]["title"] == "Bad"
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert live(emulator)["bad"]["title"] == "Bad v2"


def test_an_expired_session_is_renewed_once_mid_run(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("desk", extra="title: Desk")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    logins_before = era_stats(emulator)["logins"]
    assert logins_before == 1

    # After the listing, the session "expires": the write answers exactly what Era answers
    # for an expired session; the client must log in again once and repeat the write.
    ws.roleapp("desk", extra="title: Desk v2")
    emulator.control(
        "era",
        "fail",
        {
            "method": "PATCH",
            "path_regex": f"{create_id('desk')}$",
            "status": 401,
            "body": {"error_code": 1401, "error_message": "the session has expired"},
        },
    )
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    stats = era_stats(emulator)
    assert stats["logins"] == logins_before + 2
    assert stats["failed_logins"] == 0
    assert stats["calls"][f"PATCH {ROLEAPPS}/{{id}}"] == 2
    assert live(emulator)["desk"]["title"] == "Desk v2"

    # A session the server dropped between two runs is no problem either.
    emulator.control("era", "expire_sessions")
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


def test_a_lost_create_answer_never_makes_a_duplicate(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("desk", extra="title: Desk")
    # The server creates it, then the connection drops before the answer.
    emulator.control("era", "drop_after_work", {"method": "POST", "path_regex": f"{ROLEAPPS}$"})
    applied = expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert f"created {create_id('desk')}" in applied.stdout
    assert list(live(emulator)) == ["desk"]
    assert calls(emulator, f"LOOKUP {ROLEAPPS}") >= 1
    assert inventory(ws) == {"desk": create_id("desk")}
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


def test_an_object_deleted_on_the_server_is_created_again_with_its_id(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("desk", extra="title: Desk")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    token = _login(emulator)
    response = emulator.http.delete(
        f"/era{ROLEAPPS}/{create_id('desk')}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 204
    planned = expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 2)
    assert "recorded object gone: creating again with its id" in planned.stdout
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert live(emulator)["desk"]["id"] == create_id("desk")
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


@pytest.mark.slow
def test_converges_through_a_flaky_server(ws: Workspace) -> None:
    """503s, 429s and dropped connections on a share of all calls: retried, never doubled."""
    emulator = ws.emulator
    assert emulator is not None
    for i in range(12):
        ws.roleapp(f"app-{i:02d}", extra=f"title: App {i}")
    emulator.control(
        "server",
        "fault",
        {"error_rate": 0.15, "rate_429": 0.05, "retry_after": 0, "drop_rate": 0.05, "seed": 3},
    )
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)
    counts = emulator.control("server", "stats")["server"]
    emulator.control("server", "reset_faults")
    assert counts["error_503"] and counts["rate_429"] and counts["dropped"], counts
    objects = live(emulator)
    assert sorted(objects) == [f"app-{i:02d}" for i in range(12)]
    assert all(o["id"] == create_id(o["folder"]) for o in objects.values())


def test_secrets_in_roleapp_options_are_never_shown_or_saved(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    secret = SECRETS["VCDA_BACKUP_PASSWORD"]
    ws.roleapp("desk", extra='title: Desk\nopts: {token: "${VCDA_BACKUP_PASSWORD}", x: 1}')
    planned = expect(converge(ws, "plan", "manifests", "--out", "plan.json"), 0)
    assert "opts.token: (sensitive, changed)" in planned.stdout
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert live(emulator)["desk"]["opts"]["token"] == secret  # sent, just never shown
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)

    emulator.control("era", "edit", {"id": create_id("desk"), "fields": {"opts.token": "other"}})
    planned = expect(converge(ws, "plan", "manifests", "--format", "json", "--out", "p2.json"), 0)
    (update,) = planned.json()["actions"]
    assert update["changes"] == [
        {
            "path": "opts.token",
            "before": "(sensitive, changed)",
            "after": "(sensitive, changed)",
            "sensitive": True,
        }
    ]
    # The saved plan holds no secret, so it cannot restore one: apply from the manifests.
    refused = expect(converge(ws, "apply", "--plan", "p2.json", "manifests"), 1)
    assert "masked" in refused.stderr
    assert live(emulator)["desk"]["opts"]["token"] == "other"
    expect(converge(ws, "apply", "manifests", "--auto-approve", "--format", "json"), 0)
    assert live(emulator)["desk"]["opts"] == {"token": secret, "x": 1}


@pytest.fixture
def short_sessions() -> Iterator[Emulator]:
    """An emulator whose Era sessions expire after one idle second (the default is 600)."""
    from controller.emulator import element, era
    from controller.emulator.server import EmulatorServer
    from controller.emulator.storage import Storage

    apis = [era.EraApi(Storage(None), session_idle=1.0), element.ElementApi(Storage(None))]
    server = EmulatorServer(apis).start()
    handle = Emulator(server)
    try:
        yield handle
    finally:
        handle.close()
        server.stop()


def test_a_session_idle_past_its_lifetime_is_renewed(
    tmp_path: Path, short_sessions: Emulator
) -> None:
    """The real thing: an apply waits for a backup longer than Era keeps an idle session,
    then deletes a roleapp (deletes run last) with the old token."""
    emulator = short_sessions
    ws = Workspace(tmp_path, emulator)
    ws.era_connection()
    ws.element_connection()
    ws.roleapp("keep", extra="title: Keep")
    ws.roleapp("drop", extra="title: Drop")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)

    emulator.control("element", "seed_application", {"id": ELEMENT_APP, "name": "crm"})
    emulator.control("element", "set_duration", {"seconds": 2.5})
    ws.policy("crm", "element", spec="maxAge: 26h\nwait: 1m")
    ws.remove("roleapps/drop.yaml")
    logins = era_stats(emulator)["logins"]
    applied = expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert "- delete RoleApp/era-main/drop: ok" in applied.stdout
    stats = era_stats(emulator)
    assert stats["logins"] == logins + 2, "expected one login, then one renewal"
    assert stats["failed_logins"] == 0
    assert stats["calls"][f"DELETE {ROLEAPPS}/{{id}}"] == 2  # answered 401, then repeated
    assert set(live(emulator)) == {"keep"}
    assert_no_secrets_in_files(ws.written_files())


# -- confirmation and the state lock -------------------------------------------------------


def test_apply_needs_confirmation_and_the_state_lock(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("desk", extra="title: Desk")

    refused = expect(converge(ws, "apply", "manifests"), 1)
    assert "no terminal" in refused.stderr and "--auto-approve" in refused.stderr
    assert era_stats(emulator)["total"] == 0, "a refused apply called the server"
    assert not (ws.root / ".converge").exists()

    store = open_store(f"sqlite:///{ws.root}/.converge/state.db")
    try:
        with store.lock(holder="ci-job-4242 on runner-7", timeout=0):
            locked = expect(converge(ws, "apply", "manifests", "--auto-approve"), 4)
            assert "ci-job-4242 on runner-7" in locked.stderr
            started = time.monotonic()
            locked = expect(
                converge(ws, "apply", "manifests", "--auto-approve", "--lock-timeout", "1s"), 4
            )
            assert time.monotonic() - started >= 1.0
            assert "ci-job-4242 on runner-7" in locked.stderr
            assert live(emulator) == {}
    finally:
        store.close()
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert set(live(emulator)) == {"desk"}


@pytest.mark.slow
def test_a_killed_apply_does_not_block_the_next(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    for i in range(4):
        ws.roleapp(f"app-{i}", extra=f"title: App {i}")
    emulator.control("server", "fault", {"latency": 0.5})
    process = subprocess.Popen(
        [sys.executable, "-m", "controller", "apply", "manifests", "--auto-approve"],
        cwd=ws.root,
        env=ws.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        store = open_store(f"sqlite:///{ws.root}/.converge/state.db")
        try:
            deadline = time.monotonic() + 30
            while store.lock_info() is None:
                assert time.monotonic() < deadline, "the apply never took the lock"
                assert process.poll() is None, "the apply ended before it could be killed"
                time.sleep(0.05)
        finally:
            store.close()
    finally:
        process.kill()  # SIGKILL: no cleanup, the lock row stays behind
        process.wait(timeout=30)
    emulator.control("server", "reset_faults")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    assert sorted(live(emulator)) == [f"app-{i}" for i in range(4)]
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)


def test_refused_credentials_are_tried_once_and_never_shown(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("desk", extra="title: Desk")
    ws.env["ERA_PASSWORD"] = "wrong-Pa55-x7"
    failed = expect(converge(ws, "plan", "manifests"), 1)
    assert "era-main" in failed.stderr
    assert "wrong-Pa55-x7" not in failed.output
    stats = era_stats(emulator)
    assert (stats["logins"], stats["failed_logins"]) == (0, 1)  # Era bans an IP after 5

    ws.env["ERA_URL"] = "http://127.0.0.1:9/era"  # nothing listens on the discard port
    unreachable = expect(converge(ws, "plan", "manifests"), 1)
    assert "era-main" in unreachable.stderr
    assert "wrong-Pa55-x7" not in unreachable.output


def _on_a_terminal(ws: Workspace, answer: str, *args: str) -> Result:
    """converge with a pseudo-terminal as stdin, answering its question with ``answer``."""
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode() + b"\n")
        completed = subprocess.run(
            [sys.executable, "-m", "controller", *args],
            cwd=ws.root,
            env=ws.env,
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(follower)
        os.close(leader)
    result = Result(completed.returncode, completed.stdout, completed.stderr)
    assert "Traceback" not in result.output, result.output
    assert_no_secrets(result.stdout, result.stderr)
    return result


def test_apply_on_a_terminal_asks_first(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("desk", extra="title: Desk")
    declined = expect(_on_a_terminal(ws, "n", "apply", "manifests"), 1)
    assert "+ create RoleApp desk" in declined.stdout
    assert "Apply these changes?" in declined.stderr
    assert "nothing was changed" in declined.stderr
    assert era_stats(emulator)["roleapps"] == 0
    accepted = expect(_on_a_terminal(ws, "y", "apply", "manifests"), 0)
    assert "Apply complete: 1 succeeded" in accepted.stdout
    assert set(live(emulator)) == {"desk"}


# -- scoping --------------------------------------------------------------------------------


def test_target_and_selector_limit_plan_and_apply(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None

    def declare(suffix: str) -> None:
        for name, team in (("a", "x"), ("b", "y"), ("c", "x")):
            ws.write(
                f"roleapps/{name}.yaml",
                f"""
                apiVersion: converge/v1
                kind: RoleApp
                metadata: {{name: {name}, labels: {{team: {team}}}}}
                spec: {{folder: {name}, title: "{name.upper()}{suffix}"}}
                """,
            )

    declare("")
    ws.roleapp("gone", extra="title: Gone")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    ws.remove("roleapps/gone.yaml")
    declare(" v2")

    doc = plan_json(ws, "--target", "RoleApp/b")
    assert actions(doc) == [("update", "b")]
    doc = plan_json(ws, "--target", "RoleApp/era-main/b", "--target", "RoleApp/era-main/gone")
    assert actions(doc) == [("update", "b"), ("delete", "gone")]

    expect(converge(ws, "apply", "manifests", "--auto-approve", "--target", "RoleApp/a"), 0)
    titles = {k: v["title"] for k, v in live(emulator).items()}
    assert titles == {"a": "A v2", "b": "B", "c": "C", "gone": "Gone"}

    doc = plan_json(ws, "--selector", "team=x")
    assert actions(doc) == [("update", "c")]
    expect(converge(ws, "apply", "manifests", "--auto-approve", "--selector", "team=x"), 0)
    titles = {k: v["title"] for k, v in live(emulator).items()}
    assert titles == {"a": "A v2", "b": "B", "c": "C v2", "gone": "Gone"}
    assert "gone" in inventory(ws), "a scoped apply forgot an object outside its scope"

    doc = plan_json(ws)
    assert sorted(actions(doc)) == [("delete", "gone"), ("update", "b")]


# -- output formats -------------------------------------------------------------------------


def test_plan_formats_json_schema_and_markdown(ws: Workspace) -> None:
    emulator = ws.emulator
    assert emulator is not None
    ws.roleapp("keep", extra="title: Keep")
    ws.roleapp("drop", extra="title: Drop")
    expect(converge(ws, "apply", "manifests", "--auto-approve"), 0)
    (legacy_id,) = emulator.control("era", "seed", {"roleapps": [{"folder": "legacy"}]})["ids"]

    ws.roleapp("keep", extra="title: Keep v2")
    ws.remove("roleapps/drop.yaml")
    ws.roleapp("legacy", extra="title: Legacy")
    app = ws.manifests / "roleapps" / "app"
    app.mkdir()
    (app / "index.html").write_text("hi\n", encoding="utf-8")
    ws.roleapp("fresh", extra="title: Свежее приложение\narchive: app")

    result = expect(converge(ws, "plan", "manifests", "--format", "json", "--out", "p.json"), 0)
    doc = result.json()
    schema = json.loads((REPO / "schemas" / "plan.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(doc, schema)
    assert json.loads((ws.root / "p.json").read_text(encoding="utf-8")) == doc
    assert doc["format"] == "converge.plan/v1"
    assert doc["created"].endswith("Z")
    assert doc["summary"] == {
        "create": 1,
        "update": 1,
        "delete": 1,
        "adopt": 1,
        "archive": 1,
        "backup": 0,
        "expire": 0,
        "unchanged": 0,
    }
    by_key = {(a["action"], a["name"]): a for a in doc["actions"]}
    assert set(by_key) == {
        ("create", "fresh"),
        ("archive", "fresh"),
        ("update", "keep"),
        ("delete", "drop"),
        ("adopt", "legacy"),
    }
    for action in doc["actions"]:
        assert {"action", "kind", "name", "connection", "reason", "changes"} <= set(action)
        assert action["kind"] == "RoleApp" and action["connection"] == "era-main"
    update = by_key[("update", "keep")]
    assert update["id"] == create_id("keep")
    assert update["source"].startswith("manifests/roleapps/keep.yaml:")
    assert update["reason"] == "title differs"
    assert update["changes"] == [{"path": "title", "before": "Keep", "after": "Keep v2"}]
    assert isinstance(update["fingerprint"], str) and update["fingerprint"]
    assert by_key[("adopt", "legacy")]["id"] == legacy_id
    assert doc["actions"][-1]["action"] == "delete", "deletes come last"

    markdown = expect(converge(ws, "plan", "manifests", "--format", "markdown"), 0).stdout
    for name in ("fresh", "keep", "drop", "legacy", "Свежее приложение"):
        assert name in markdown
    assert "\x1b[" not in markdown

    # The saved plan re-loads and applies every kind of action it holds.
    expect(converge(ws, "apply", "--plan", "p.json", "manifests"), 0)
    objects = live(emulator)
    assert set(objects) == {"keep", "legacy", "fresh"}
    assert objects["fresh"]["title"] == "Свежее приложение"
    assert objects["fresh"]["opts"]["attachment_info"]["hasha"].startswith("md5;")
    assert objects["legacy"]["title"] == "Legacy"
    assert inventory(ws) == {
        "keep": create_id("keep"),
        "legacy": legacy_id,
        "fresh": create_id("fresh"),
    }
    expect(converge(ws, "plan", "manifests", "--detailed-exitcode"), 0)
    # Applied once, it is stale: nothing is applied twice.
    expect(converge(ws, "apply", "--plan", "p.json", "manifests"), 3)


# -- the sandbox ----------------------------------------------------------------------------


def _copy_examples(target: Path) -> None:
    """examples/manifests, less the documents of an API the emulator does not serve yet."""
    served = {api.mount for api in build_apis(None)}
    shutil.copytree(REPO / "examples" / "manifests", target, dirs_exist_ok=True)
    for path in target.glob("*.yaml"):
        documents = path.read_text(encoding="utf-8").split("\n---\n")
        kept = [d for d in documents if not any(f"{api}-main" in d for api in _APIS - served)]
        path.write_text("\n---\n".join(kept), encoding="utf-8")


_APIS = {"era", "element", "vcda", "commvault"}


def test_examples_against_the_sandbox(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, None)  # no ERA_URL: the examples default to `url: sandbox`
    _copy_examples(ws.manifests)
    applied = ws.run("apply", "manifests", "--auto-approve", input="")
    assert applied.code == 0, applied.output
    assert (tmp_path / ".converge" / "sandbox").is_dir()
    again = ws.run("plan", "manifests", "--detailed-exitcode", input="")
    assert again.code == 0, again.output
    assert_no_secrets(applied.output, again.output)
    assert_no_secrets_in_files(ws.written_files())
