"""The emulator's HTTP server over real loopback HTTP: routing, keep-alive, control plane,
faults, concurrency, persistence (also across a SIGKILL), the sandbox and ``serve``.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller import emulator
from controller.emulator import core, era, sandbox, server, storage

from .conftest import ERA_CREDENTIALS

ROLEAPPS = "/rest/v1/domain/roleapps"


class EchoApi:
    """A minimal EmulatedApi: answers with what it got, under any mount."""

    def __init__(self, mount: str) -> None:
        self.mount = mount
        self.harness = core.Harness()

    def handle(self, request: core.EmuRequest) -> core.EmuResponse:
        return self.harness.run(request, self._echo)

    def _echo(self, request: core.EmuRequest) -> core.EmuResponse:
        if request.path == "/boom":
            raise RuntimeError("bug")
        return core.json_response(
            200,
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": request.body.decode(),
                "type": request.headers.get("content-type"),
            },
        )

    def control(self, action: str, payload: dict[str, Any]) -> Any:
        return self.harness.control(action, payload)

    def credentials(self) -> dict[str, str]:
        return {"user": self.mount}


@pytest.fixture
def echo_server() -> Iterator[server.EmulatorServer]:
    apis = [EchoApi("element"), EchoApi("commvault")]
    with server.EmulatorServer(apis, seed=7) as running:
        yield running


def control(emu: server.EmulatorServer, target: str, action: str, body: Any = None) -> Any:
    response = httpx.post(f"{emu.url}/_control/{target}/{action}", json=body or {})
    assert response.status_code == 200, response.text
    return response.json()


# --- routing and HTTP --------------------------------------------------------------------


def test_routes_by_mount_and_commvault_base_path(echo_server: server.EmulatorServer) -> None:
    assert echo_server.url_for("element") == f"{echo_server.url}/element"
    assert echo_server.url_for("commvault") == f"{echo_server.url}/commvault/commandcenter/api"
    got = httpx.get(echo_server.url_for("element") + "/console/x", params={"a": ["1", "2"]})
    assert got.json()["path"] == "/console/x"
    assert got.json()["query"] == {"a": ["1", "2"]}
    got = httpx.post(echo_server.url_for("commvault") + "/Login", json={"u": 1})
    assert got.json()["path"] == "/Login"
    assert json.loads(got.json()["body"]) == {"u": 1}
    assert httpx.get(f"{echo_server.url}/nothing/here").status_code == 404
    assert httpx.get(f"{echo_server.url}/commvault/other").status_code == 404


def test_any_method_is_dispatched(echo_server: server.EmulatorServer) -> None:
    with httpx.Client(base_url=echo_server.url_for("element")) as client:
        for method in ("LOOKUP", "PATCH", "DELETE", "OPTIONS", "PUT"):
            response = client.request(method, "/x", content=b'"id"')
            assert response.json()["method"] == method
            assert response.json()["body"] == '"id"'


def test_keep_alive_and_chunked_bodies(echo_server: server.EmulatorServer) -> None:
    connection = http.client.HTTPConnection(echo_server.host, echo_server.port, timeout=5)
    try:
        connection.request("GET", "/element/one")
        first = connection.getresponse()
        assert first.getheader("Content-Length") is not None
        first.read()
        sock = connection.sock
        connection.request("POST", "/element/two", body=iter([b"ab", b"cd"]))  # chunked
        second = connection.getresponse()
        assert json.loads(second.read())["body"] == "abcd"
        assert connection.sock is sock  # the same connection served both
    finally:
        connection.close()


def test_api_bug_is_a_500_not_a_hang(echo_server: server.EmulatorServer) -> None:
    response = httpx.get(echo_server.url_for("element") + "/boom")
    assert response.status_code == 500


def test_requests_are_not_logged(
    echo_server: server.EmulatorServer, capfd: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        httpx.get(echo_server.url_for("element") + "/x")
    assert capfd.readouterr().err == ""


# --- control plane and faults -----------------------------------------------------------


def test_control_plane_errors(echo_server: server.EmulatorServer) -> None:
    base = f"{echo_server.url}/_control"
    assert httpx.post(f"{base}/nobody/stats").status_code == 404
    assert httpx.post(f"{base}/element/nonsense").status_code == 404
    assert httpx.post(f"{base}/server/nonsense").status_code == 404
    assert httpx.post(f"{base}/element/fail", content=b"{bad").status_code == 400
    assert httpx.post(f"{base}/element/fail", json=[1]).status_code == 400
    assert httpx.post(f"{base}/server/fault", json={"error_rate": 2}).status_code == 400
    assert httpx.post(f"{base}/server/fault", json={"colour": 1}).status_code == 400
    assert httpx.post(f"{base}/element").status_code == 404


def test_fail_rule_answers_without_the_work(
    served: tuple[server.EmulatorServer, era.EraApi], era_client: httpx.Client
) -> None:
    emu = served[0]
    body = {"method": "POST", "path_regex": "roleapps$", "status": 502, "times": 2}
    assert control(emu, "era", "fail", body) == {"armed": "fail", "times": 2}
    for _ in range(2):
        response = era_client.post(ROLEAPPS, json={"id": "a1", "folder": "f"})
        assert response.status_code == 502
        assert response.json() == {"error_code": 1502, "error_message": "injected failure"}
    assert era_client.get(ROLEAPPS).json() == []  # the work was not done; GET unaffected
    assert era_client.post(ROLEAPPS, json={"id": "a1", "folder": "f"}).status_code == 200
    custom = {"path_regex": "a1", "status": 418, "body": {"odd": True}}
    control(emu, "era", "fail", custom)
    assert era_client.get(f"{ROLEAPPS}/a1").json() == {"odd": True}


def test_drop_after_work_does_the_work(
    served: tuple[server.EmulatorServer, era.EraApi], era_client: httpx.Client
) -> None:
    emu, _ = served
    control(emu, "era", "drop_after_work", {"method": "POST", "path_regex": "roleapps"})
    with pytest.raises(httpx.RemoteProtocolError):
        era_client.post(ROLEAPPS, json={"id": "lost-answer", "folder": "f"})
    lookup = era_client.request("LOOKUP", ROLEAPPS, json="lost-answer")
    assert (lookup.status_code, lookup.json()) == (200, ["lost-answer"])


def test_server_error_rate_and_reset(
    served: tuple[server.EmulatorServer, era.EraApi], era_client: httpx.Client
) -> None:
    emu, _ = served
    control(emu, "server", "fault", {"error_rate": 1.0})
    response = era_client.get(ROLEAPPS)
    assert response.status_code == 503
    assert response.json()["error_code"] == 1503  # in the API's own error shape
    stats = control(emu, "server", "stats")  # the control plane is never faulted
    assert stats["server"]["error_503"] == 1
    assert stats["apis"]["era"]["logins"] == 1
    control(emu, "server", "reset_faults")
    assert era_client.get(ROLEAPPS).status_code == 200


def test_constructor_error_rate_is_seeded_and_partial() -> None:
    def statuses(seed: int) -> list[int]:
        apis = [EchoApi("element")]
        emu = server.EmulatorServer(apis, error_rate=0.5, seed=seed).start()
        try:
            with httpx.Client(base_url=emu.url_for("element")) as client:
                return [client.get("/x").status_code for _ in range(40)]
        finally:
            emu.stop()

    first = statuses(3)
    assert first == statuses(3)
    assert 5 < first.count(503) < 35
    assert set(first) == {200, 503}


def test_rate_429_drop_and_latency(echo_server: server.EmulatorServer) -> None:
    url = echo_server.url_for("element") + "/x"
    control(echo_server, "server", "fault", {"rate_429": 1.0, "retry_after": 2})
    response = httpx.get(url)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "2")
    control(echo_server, "server", "fault", {"rate_429": 0, "drop_rate": 1.0})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)
    control(echo_server, "server", "fault", {"drop_rate": 0, "latency": 0.1, "jitter": 0.01})
    started = time.perf_counter()
    assert httpx.get(url).status_code == 200
    assert time.perf_counter() - started >= 0.1


def test_sixteen_concurrent_keep_alive_clients(
    served: tuple[server.EmulatorServer, era.EraApi],
    era_client: httpx.Client,
    make_client: Callable[..., httpx.Client],
) -> None:
    emu, api = served
    # One session shared by every client, as the controller does: Era allows 10 per user.
    token = era_client.headers["Authorization"]
    clients = [make_client(emu.url_for("era"), login=False) for _ in range(16)]
    for client in clients:
        client.headers["Authorization"] = token

    def work(index: int) -> int:
        client = clients[index]
        for n in range(20):
            app_id = f"c{index:02d}-{n:02d}"
            assert client.post(ROLEAPPS, json={"id": app_id, "folder": "f"}).status_code == 200
            assert client.get(f"{ROLEAPPS}/{app_id}").status_code == 200
        return len(client.get(ROLEAPPS, params={"limit": 1000}).json())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(16)))
    assert api.control("stats", {})["roleapps"] == 320


# --- persistence, sandbox, serve --------------------------------------------------------


def test_sandbox_persists_across_a_restart(tmp_path: Path) -> None:
    first = sandbox.start_sandbox(tmp_path, page_cap=50)
    try:
        assert (tmp_path / "era.db").exists()
        with httpx.Client(base_url=first.url_for("era")) as client:
            login(client)
            assert client.post(ROLEAPPS, json={"id": "kept", "folder": "f"}).status_code == 200
            path = f"{ROLEAPPS}/kept/attachment"
            assert client.put(path, content=b"zip-bytes").status_code == 204
    finally:
        first.stop()
    second = sandbox.start_sandbox(tmp_path)
    try:
        assert second.port != 0
        with httpx.Client(base_url=second.url_for("era")) as client:
            login(client)
            assert client.get(f"{ROLEAPPS}/kept").json()["folder"] == "f"
            assert client.get(f"{ROLEAPPS}/kept/attachment").content == b"zip-bytes"
    finally:
        second.stop()


def test_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from controller import emulator;"
        "emulator.serve(port=0, data_dir=Path(sys.argv[1]),"
        " echo=lambda line: print(line, flush=True))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # "converge emulator on http://127.0.0.1:PORT ..."
        base = first.split(" on ", 1)[1].split(" ", 1)[0]
        with httpx.Client(base_url=f"{base}/era", timeout=10) as client:
            login(client)
            assert client.post(ROLEAPPS, json={"id": "durable", "folder": "f"}).status_code == 200
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    reopened = storage.Storage(tmp_path / "era.db")
    try:
        assert reopened.get("roleapps", "durable")["folder"] == "f"
    finally:
        reopened.close()


def test_serve_prints_urls_and_credentials() -> None:
    lines: list[str] = []
    running = emulator.serve(port=0, echo=lines.append, block=False)
    try:
        assert running.url in lines[0]
        era_line = next(line for line in lines if line.strip().startswith("era"))
        assert running.url_for("era") in era_line
        assert "password=sandbox-era-pass" in era_line
        assert set(running.apis) == {"era", "element", "vcda", "commvault"}
        for mount in running.apis:
            assert any(running.url_for(mount) in line for line in lines[1:])
        with httpx.Client(base_url=running.url_for("era")) as client:
            login(client)
    finally:
        running.stop()


def test_stop_without_start_and_twice() -> None:
    emu = server.EmulatorServer([EchoApi("element")])
    emu.stop()
    emu.stop()


def login(client: httpx.Client) -> None:
    body = {
        "domain": ERA_CREDENTIALS["domain"],
        "login": ERA_CREDENTIALS["login"],
        "pwd": ERA_CREDENTIALS["password"],
        "session_type": "api",
    }
    response = client.post("/rest/v1/iam/sessions", json=body)
    assert response.status_code == 200, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['session_token']}"


def test_storage_collections_bytes_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = storage.Storage(path)
    store.put("apps", "b", {"n": 1})
    store.put("apps", "a", {"n": 2})
    store.put_many("apps", [("c", {"n": 3}), ("b", {"n": 10})])
    store.put("blobs", "a", b"\x00\xffzip")
    assert store.delete("apps", "a") is True
    assert store.delete("apps", "a") is False
    store.close()
    reopened = storage.Storage(path)
    try:
        assert reopened.items("apps") == [("b", {"n": 10}), ("c", {"n": 3})]
        assert reopened.get("blobs", "a") == b"\x00\xffzip"
        assert reopened.get("apps", "missing", "dflt") == "dflt"
        assert reopened.count("apps") == 2
        reopened.clear("apps")
        assert reopened.items("apps") == [] and reopened.keys("blobs") == ["a"]
        reopened.clear()
        assert reopened.items("blobs") == []
    finally:
        reopened.close()


def test_fault_rules_match_method_path_and_count_down() -> None:
    rules = core.FaultRules()
    rules.add("fail", {"path_regex": "^/x", "times": 2})
    rules.add("drop_after_work", {"method": "post", "path_regex": "y"})
    assert rules.take("fail", "GET", "/y") is None
    assert rules.take("fail", "DELETE", "/x/1") is not None  # no method: any method
    assert rules.pending() == {"fail": 1, "drop_after_work": 1}
    assert rules.take("drop_after_work", "GET", "/y") is None
    assert rules.take("drop_after_work", "POST", "/y") is not None
    assert rules.take("fail", "GET", "/x") is not None
    assert rules.pending() == {"fail": 0, "drop_after_work": 0}
    for bad in ({"path_regex": "("}, {"times": 0}, {"status": "x"}):
        with pytest.raises(core.BadRequest):
            rules.add("fail", bad)
