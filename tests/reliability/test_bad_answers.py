"""Bad answers: HTML pages, JSON cut short, wrong types, huge bodies, 200s that mean failure.

A fault server (``faultserver.py``) sits between converge and the emulator and answers one
chosen call badly; every other call is real. converge must end with a clear error naming
the connection and the call — exit 1 when nothing could be done, 5 when the rest was
applied — never a traceback or an internal error, and nothing half-written in the state:
no inventory entry or backup record for what failed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from controller.state import open_store
from tests.reliability.conftest import HOUR, Emulator, Workspace
from tests.reliability.faultserver import FaultServer

ROLEAPPS = "/era/rest/v1/domain/roleapps"
DUMPS = r"/element/console/api/v2/applications/[^/]+/dumps"
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
ONE = "68f99ca9-016c-d352-e02f-50e54938780c"


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    command: str  # plan | apply
    method: str
    path: str  # regex on the full path
    body: bytes
    call: str  # what the error must name
    status: int = 200
    content_type: str = "application/json"
    times: int = 1
    words: str = ""  # the server's own words the error must carry, if any


def roleapp(**fields: object) -> dict[str, object]:
    return {"id": ONE, "folder": "app-0", "title": "x", **fields}


CASES = [
    Case("era html page", "plan", "GET", ROLEAPPS + "$", HTML, "era-main: GET /rest/v1/domain/roleapps",
         content_type="text/html", words="expected JSON"),
    Case("era truncated json", "plan", "GET", ROLEAPPS + "$", b'[{"id": "68f99ca9-016c', "era-main: GET /rest/v1/domain/roleapps"),
    Case("era object for a list", "plan", "GET", ROLEAPPS + "$", b'{"items": []}', "era-main: GET /rest/v1/domain/roleapps"),
    Case("era roles as a string", "plan", "GET", ROLEAPPS + "$", json.dumps([roleapp(roles="chatagent")]).encode(), ""),
    Case("era opts as a list", "plan", "GET", ROLEAPPS + "$", json.dumps([roleapp(opts=[1, 2])]).encode(), ""),
    Case("era title as an object", "plan", "GET", ROLEAPPS + "$", json.dumps([roleapp(title={"ru": "x"})]).encode(), ""),
    Case("era huge error page", "plan", "GET", ROLEAPPS + "$", b"<p>" + b"x" * 8_000_000, "era-main: GET /rest/v1/domain/roleapps",
         status=502, content_type="text/html", times=20),
    Case("era create answers a list", "apply", "POST", ROLEAPPS + "$", b"[]", "era-main: POST /rest/v1/domain/roleapps"),
    Case("era login answers html", "plan", "POST", "/era/rest/v1/iam/sessions$", HTML, "era-main: POST /rest/v1/iam/sessions",
         content_type="text/html"),
    Case("element wrapped error in a 201", "apply", "POST", DUMPS + "$",
         b'{"error": {"code": 13, "status": "INTERNAL", "message": "disk full", "details": []}}',
         "element-main: POST /console/api/v2/applications/", status=201, words="disk full"),
    Case("element dumps not a list", "plan", "GET", DUMPS + "$", b'{"dumps": "none"}', "element-main: GET /console/api/v2/applications/"),
    Case("element token truncated", "plan", "POST", "/element/console/sys/token$", b'{"id_token": "ey', "element-main: POST /console/sys/token"),
    Case("vcda task list html", "plan", "GET", "/vcda/tasks$", HTML, "vcda-main: GET /tasks", content_type="text/html"),
    Case("vcda generate truncated", "apply", "POST", "/vcda/backups$", b'{"id": "4b1f', "vcda-main: POST /backups", status=202),
    Case("commvault errorCode in a 200", "apply", "POST", "(?i)/createtask$",
         b'{"errorCode": 2, "errorMessage": "Subclient is not configured for backup"}', "commvault-main: POST /CreateTask",
         words="Subclient is not configured"),
    Case("commvault jobs as an object", "plan", "POST", "(?i)/jobs$", b'{"jobs": {"jobSummary": 1}}', "commvault-main: POST /Jobs"),
    Case("commvault job with wrong types", "plan", "POST", "(?i)/jobs$",
         b'{"totalRecordsWithoutPaging": "x", "jobs": [{"jobSummary": {"jobId": [], "status": 7, "jobStartTime": "soon"}}]}', ""),
]  # fmt: skip


@pytest.fixture
def fault(emulator: Emulator) -> Iterator[FaultServer]:
    server = FaultServer(emulator.server.url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_answer_is_a_clear_error_and_leaves_no_half_state(
    workspace: Workspace, emulator: Emulator, fault: FaultServer, case: Case
) -> None:
    emulator.seed_sources()
    for api in ("element", "vcda", "commvault"):
        emulator.control(api, "seed_backup", {"age_seconds": 30 * HOUR})
    for api in ("era", "element", "vcda", "commvault"):
        workspace.env[f"{api.upper()}_URL"] = fault.url + emulator.url(api).removeprefix(
            emulator.server.url
        )
    workspace.connections()
    api = case.call.split("-", 1)[0] or case.path.split("/")[1]
    if case.path.startswith("/era"):
        workspace.roleapps(["app-0", "app-1"])
    else:
        workspace.policies(wait="0s")
    fault.answer(
        case.method,
        case.path,
        status=case.status,
        body=case.body,
        content_type=case.content_type,
        times=case.times,
    )

    args = [case.command, "manifests"] + (["--auto-approve"] if case.command == "apply" else [])
    result = workspace.run(*args)  # asserts: no traceback, no internal error

    assert fault.served, "the bad answer was never asked for"
    if case.call:
        assert result.code in (1, 5), result.output
        assert case.call in result.output, result.output
        assert case.words in result.output, result.output
    else:  # odd types in live data: planned around (as drift) or refused, clearly
        assert result.code in (0, 1), result.output
        if result.code == 1:
            assert f"{api}-main: " in result.stderr, result.output
    assert len(result.output) < 20_000, "a huge body reached the output"
    if case.command == "apply":
        assert_nothing_half_written(workspace, emulator, api)


def assert_nothing_half_written(workspace: Workspace, emulator: Emulator, api: str) -> None:
    store = open_store(f"sqlite:///{workspace.state_db}")
    try:
        names = {e.name for e in store.inventory()}
        live = {r["folder"] for r in emulator.roleapps()}
        assert names <= live, f"inventory names objects that do not exist: {names - live}"
        policy = {
            "element": ("crm-dumps", "element-main"),
            "vcda": ("appliance", "vcda-main"),
            "commvault": ("orders-dynamodb", "commvault-main"),
        }.get(api)
        if policy is not None:
            records = store.backups(policy=policy[0], connection=policy[1])
            assert records == [], f"a backup record for a trigger that failed: {records}"
    finally:
        store.close()
