"""Reliability harness: the four emulated APIs with distinctive credentials, converge as a user runs it.

Like ``tests/e2e`` (loopback HTTP only, converge as a subprocess), plus what these tests
need to prove their points: counts read straight from the emulator's storage (roleapps
per folder, backups per policy), every credential a distinctive value that can be
scanned for, and manifests for all four APIs written in a few calls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.emulator import commvault, element, era, vcda
from controller.emulator.server import EmulatorServer
from controller.emulator.storage import Storage
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Result

RUN_TIMEOUT = 150  # seconds: a hung converge fails the test instead of hanging CI

# Distinctive values: no other text in any output can contain them by chance.
SECRETS = {
    "ERA_PASSWORD": "EraPw-q7Zk3vR1xw",
    "ELEMENT_CLIENT_SECRET": "ElemSecret-m4Hd9tY2",
    "VCDA_PASSWORD": "VcdaPw-p8Lc2nQ6",
    "COMMVAULT_PASSWORD": "CvPw-b3Ws7eK5",
    "VCDA_BACKUP_PASSWORD": "BackupFilePw-x9Tg4uJ0",
}
ERA_ACCOUNT = {"domain": "rel.era", "login": "converge", "password": SECRETS["ERA_PASSWORD"]}
APP_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SUBCLIENT_ID = 123
HOUR = 3600


class Emulator(e2e.Emulator):
    """The e2e harness's emulator handle, plus server-side counts read from storage."""

    def stats(self, api: str) -> dict[str, Any]:
        return self.control(api, "stats")

    def requests(self) -> int:
        """API calls the server has seen (control-plane calls not counted)."""
        return int(self.server.faults.stats()["requests"])

    def posts(self, api: str = "era") -> int:
        calls = self.stats(api)["calls"]
        return sum(n for call, n in calls.items() if call.startswith("POST "))

    def roleapps(self) -> list[dict[str, Any]]:
        """Every live roleapp, read from the emulator's own storage (no faults, no login)."""
        api = self.server.apis["era"]
        with api._lock:  # the emulator's own lock: a consistent snapshot
            return [obj for _key, obj in api._storage.items("roleapps")]

    def folders(self) -> Counter[str]:
        return Counter(str(r["folder"]) for r in self.roleapps())

    def backups(self) -> dict[str, int]:
        """How many backups each product holds: element dumps, vcda tasks, commvault jobs."""
        apis = self.server.apis
        return {
            "element": apis["element"].storage.count(element.DUMPS),
            "vcda": apis["vcda"].storage.count(vcda.TASKS),
            "commvault": apis["commvault"].storage.count(commvault.JOBS),
        }

    def seed_sources(self) -> None:
        self.control("element", "seed_application", {"id": APP_ID, "name": "crm"})
        self.control(
            "commvault",
            "seed_subclient",
            {"subclient_id": SUBCLIENT_ID, "client_name": "aws-prod", "instance_name": "DynamoDB"},
        )
        for api in ("element", "vcda", "commvault"):
            self.control(api, "set_duration", {"seconds": 0.3})


def start_server(*, seed: int = 1) -> EmulatorServer:
    apis = [
        era.EraApi(Storage(None), accounts=[ERA_ACCOUNT]),
        element.ElementApi(Storage(None), client_secret=SECRETS["ELEMENT_CLIENT_SECRET"]),
        vcda.VcdaApi(Storage(None), password=SECRETS["VCDA_PASSWORD"]),
        commvault.CommvaultApi(Storage(None), password=SECRETS["COMMVAULT_PASSWORD"]),
    ]
    return EmulatorServer(apis, seed=seed).start()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    server = start_server()
    handle = Emulator(server)
    try:
        yield handle
    finally:
        handle.close()
        server.stop()


class Workspace:
    """A manifests directory in a temporary directory, and `converge` run inside it."""

    def __init__(self, root: Path, emulator: Emulator) -> None:
        self.root = root
        self.emulator = emulator
        self.manifests = root / "manifests"
        self.manifests.mkdir()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ERA_", "VCDA_", "ELEMENT_", "COMMVAULT_", "CONVERGE_"))
        }
        self.env.update(SECRETS)
        self.env["NO_COLOR"] = "1"
        for api in ("era", "element", "vcda", "commvault"):
            self.env[f"{api.upper()}_URL"] = emulator.url(api)

    @property
    def state_db(self) -> Path:
        return self.root / ".converge" / "state.db"

    def write(self, name: str, text: str) -> Path:
        path = self.manifests / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def remove_file(self, name: str) -> None:
        (self.manifests / name).unlink()

    def connections(self, *, era_concurrency: int = 8) -> None:
        self.write(
            "connections.yaml",
            f"""
            apiVersion: converge/v1
            kind: Connection
            metadata: {{name: era-main}}
            spec:
              api: era
              url: ${{ERA_URL}}
              auth: {{domain: rel.era, login: converge, password: "${{ERA_PASSWORD}}"}}
              concurrency: {era_concurrency}
              timeout: 10s
            ---
            apiVersion: converge/v1
            kind: Connection
            metadata: {{name: element-main}}
            spec:
              api: element
              url: ${{ELEMENT_URL}}
              auth: {{clientId: converge, clientSecret: "${{ELEMENT_CLIENT_SECRET}}"}}
              timeout: 10s
            ---
            apiVersion: converge/v1
            kind: Connection
            metadata: {{name: vcda-main}}
            spec:
              api: vcda
              url: ${{VCDA_URL}}
              auth: {{type: localUser, user: admin, password: "${{VCDA_PASSWORD}}"}}
              timeout: 10s
            ---
            apiVersion: converge/v1
            kind: Connection
            metadata: {{name: commvault-main}}
            spec:
              api: commvault
              url: ${{COMMVAULT_URL}}
              auth: {{username: admin, password: "${{COMMVAULT_PASSWORD}}"}}
              timeout: 10s
            """,
        )

    def policies(self, *, wait: str = "1m") -> None:
        self.write(
            "backups.yaml",
            f"""
            apiVersion: converge/v1
            kind: BackupPolicy
            metadata: {{name: crm-dumps}}
            spec:
              connection: element-main
              maxAge: 26h
              wait: {wait}
              source:
                elementApplication: {{applicationId: {APP_ID}, includeUsers: true}}
            ---
            apiVersion: converge/v1
            kind: BackupPolicy
            metadata: {{name: appliance}}
            spec:
              connection: vcda-main
              maxAge: 26h
              wait: {wait}
              source:
                vcdaAppliance: {{password: "${{VCDA_BACKUP_PASSWORD}}"}}
            ---
            apiVersion: converge/v1
            kind: BackupPolicy
            metadata: {{name: orders-dynamodb}}
            spec:
              connection: commvault-main
              maxAge: 26h
              wait: {wait}
              source:
                commvaultDynamoDB:
                  clientName: aws-prod
                  instanceName: DynamoDB
                  subclientId: {SUBCLIENT_ID}
            """,
        )

    def roleapps(
        self, names: list[str], *, title: str = "App", file: str = "roleapps.yaml"
    ) -> None:
        """Many roleapps in one multi-document file (folder = name)."""
        docs = [
            f"apiVersion: converge/v1\nkind: RoleApp\nmetadata: {{name: {name}}}\n"
            f"spec:\n  folder: {name}\n  title: {title} {name}\n  roles: [chatagent]\n"
            f"  opts: {{recv_timeout: 30}}\n"
            for name in names
        ]
        self.write(file, "---\n".join(docs))

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "controller", *args]

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> Result:
        completed = subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(completed.returncode, completed.stdout, completed.stderr)
        assert "Traceback" not in result.output, result.output
        assert "internal error" not in result.output, result.output
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def inventory(self) -> dict[str, str]:
        """``converge state list --format json`` as name → id (roleapps only)."""
        listed = self.run("state", "list", "--format", "json")
        assert listed.code == 0, listed.output
        return {e["name"]: e["id"] for e in json.loads(listed.stdout) if e["kind"] == "RoleApp"}

    def written_files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file() and self.manifests not in p.parents]


@pytest.fixture
def workspace(tmp_path: Path, emulator: Emulator) -> Workspace:
    return Workspace(tmp_path, emulator)


def wait_until(process: subprocess.Popen[str], ready: Any, *, limit: float = 60.0) -> bool:
    """Wait until ``ready()`` is true while ``process`` runs; False if it ended first.

    Bounded: polls every 5 ms for at most ``limit`` seconds, then kills the process.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if ready():
            return True
        time.sleep(0.005)
    process.kill()
    process.wait(timeout=10)
    raise AssertionError(f"the awaited point was not reached within {limit} s")


def kill_when(process: subprocess.Popen[str], ready: Any, *, limit: float = 60.0) -> bool:
    """SIGKILL ``process`` as soon as ``ready()`` is true; False if it ended first."""
    if not wait_until(process, ready, limit=limit):
        return False
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return True


def unmanaged_roleapps(count: int) -> list[dict[str, Any]]:
    """Roleapps someone else made (seeded straight into the emulator)."""
    return [
        {
            "id": f"00000000-0000-4000-8000-{i:012d}",
            "folder": f"hand-made-{i}",
            "title": f"Someone's app {i}",
            "roles": ["chatagent"],
        }
        for i in range(count)
    ]
