"""End-to-end harness: a real emulator over loopback HTTP, and `converge` run as a user would.

The emulator runs in this process on 127.0.0.1 and a free port; converge runs as a
subprocess (`python -m controller`) in a temporary working directory, with manifests
written there and the emulator's credentials in its environment — nothing is mocked.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller import emulator as emulating
from controller.emulator.server import EmulatorServer

RUN_TIMEOUT = 180  # seconds: a hung converge fails the test instead of hanging CI

# Distinctive secret values: tests scan every output for them.
SECRETS = {
    "ERA_PASSWORD": "sandbox-era-pass",
    "ELEMENT_CLIENT_SECRET": "sandbox-element-secret",
    "VCDA_PASSWORD": "sandbox-vcda-pass",
    "COMMVAULT_PASSWORD": "sandbox-commvault-pass",
    "VCDA_BACKUP_PASSWORD": "Backup-Pa55-zq81",
}


@dataclasses.dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


class Emulator:
    """The running emulator and its control plane."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def url(self, api: str) -> str:
        return self.server.url_for(api)

    def control(self, target: str, action: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.http.post(f"/_control/{target}/{action}", json=payload or {})
        assert response.status_code < 400, response.text
        return response.json() if response.content else None

    def roleapps(self) -> list[dict[str, Any]]:
        """Every live roleapp, read over the API as a client would (admin view)."""
        token = self.http.post(
            "/era/rest/v1/iam/sessions",
            json={
                "domain": "sandbox.era",
                "login": "converge",
                "pwd": SECRETS["ERA_PASSWORD"],
                "session_type": "api",
            },
        ).json()["session_token"]
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.http.get(
                "/era/rest/v1/domain/roleapps",
                params={"offset": offset, "limit": 1000},
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            if not page:
                return items
            items.extend(page)
            offset += len(page)

    # -- backups (tests/e2e/test_backups*.py) ---------------------------------------------

    def backups_on_server(self, api: str) -> list[dict[str, Any]]:
        """Every backup attempt the server holds (running and failed ones too), read over its
        API as a client would: element dumps of ELEMENT_APP, vcda tasks, commvault jobs of
        COMMVAULT_SUBCLIENT."""
        if api == "element":
            token = self.http.post(
                "/element/console/sys/token",
                content=b"grant_type=client_credentials",
                auth=("converge", SECRETS["ELEMENT_CLIENT_SECRET"]),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ).json()["id_token"]
            response = self.http.get(
                f"/element/console/api/v2/applications/{ELEMENT_APP}/dumps",
                headers={"Authorization": f"Bearer {token}"},
            )
            return list(response.json()) if response.status_code == 200 else []
        if api == "vcda":
            return list(self.http.get("/vcda/tasks", headers=self._vcda_headers()).json()["items"])
        assert api == "commvault", api
        password = base64.b64encode(SECRETS["COMMVAULT_PASSWORD"].encode()).decode()
        token = self.http.post(
            f"{COMMVAULT_API}/Login", json={"mode": 4, "username": "admin", "password": password}
        ).json()["token"]
        jobs = self.http.post(
            f"{COMMVAULT_API}/Jobs",
            headers={"Authtoken": token},
            json={
                "scope": 1,
                "category": 0,
                "pagingConfig": {
                    "sortField": "jobId",
                    "sortDirection": 0,
                    "offset": 0,
                    "limit": 500,
                },
                "jobFilter": {
                    "completedJobLookupTime": 400 * 86400,
                    "jobTypeList": ["Backup"],
                    "entity": {"subclientId": COMMVAULT_SUBCLIENT},
                },
            },
        ).json()
        return [job["jobSummary"] for job in jobs.get("jobs") or []]

    def vcda_backup_ids(self) -> list[str]:
        """The appliance backups vcda lists (``GET /backups``: finished successes), oldest first."""
        return [
            b["id"] for b in self.http.get("/vcda/backups", headers=self._vcda_headers()).json()
        ]

    def backups_started(self, api: str) -> int:
        """How many backups the server was asked to start (seeded ones not counted)."""
        return int(self.control(api, "stats").get("counts", {}).get("backups_started", 0))

    def _vcda_headers(self) -> dict[str, str]:
        login = self.http.post(
            "/vcda/sessions",
            json={
                "type": "localUser",
                "localUser": "admin",
                "localPassword": SECRETS["VCDA_PASSWORD"],
            },
            headers=VCDA_ACCEPT,
        )
        return {**VCDA_ACCEPT, "X-VCAV-Auth": login.headers["X-VCAV-Auth"]}

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    server = emulating.serve(port=0, echo=lambda _line: None, block=False)
    handle = Emulator(server)
    try:
        yield handle
    finally:
        handle.close()
        server.stop()


class Workspace:
    """A manifests repository in a temporary directory, and `converge` run inside it."""

    def __init__(self, root: Path, emulator: Emulator | None) -> None:
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
        if emulator is not None:
            for api in ("era", "element", "vcda", "commvault"):
                if api in emulator.server.apis:
                    self.env[f"{api.upper()}_URL"] = emulator.url(api)

    def write(self, name: str, text: str) -> Path:
        path = self.manifests / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def remove(self, name: str) -> None:
        (self.manifests / name).unlink()

    def era_connection(self, name: str = "era-main") -> Path:
        return self.write(
            f"{name}.yaml",
            f"""
            apiVersion: converge/v1
            kind: Connection
            metadata: {{name: {name}}}
            spec:
              api: era
              url: ${{ERA_URL}}
              auth: {{domain: sandbox.era, login: converge, password: "${{ERA_PASSWORD}}"}}
            """,
        )

    def roleapp(
        self, name: str, *, folder: str | None = None, extra: str = "", file: str | None = None
    ) -> Path:
        body = textwrap.indent(textwrap.dedent(extra).strip(), "  ") if extra else ""
        return self.write(
            file or f"roleapps/{name}.yaml",
            f"apiVersion: converge/v1\nkind: RoleApp\nmetadata: {{name: {name}}}\nspec:\n"
            f"  folder: {folder or name}\n{body}\n",
        )

    def run(
        self, *args: str, input: str | None = None, python_flags: tuple[str, ...] = ()
    ) -> Result:
        completed = subprocess.run(
            [sys.executable, *python_flags, "-m", "controller", *args],
            cwd=self.root,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        result = Result(completed.returncode, completed.stdout, completed.stderr)
        assert "Traceback" not in result.output, result.output
        return result

    def written_files(self) -> list[Path]:
        """Everything converge wrote under the workspace except the manifests themselves."""
        return [p for p in self.root.rglob("*") if p.is_file() and self.manifests not in p.parents]

    # -- backups (tests/e2e/test_backups*.py) ---------------------------------------------

    def backup_connection(self, api: str, name: str | None = None) -> Path:
        """A Connection to the emulator's element, vcda or commvault API (``<api>-main``)."""
        name = name or f"{api}-main"
        return self.write(
            f"{name}.yaml",
            f"""
            apiVersion: converge/v1
            kind: Connection
            metadata: {{name: {name}}}
            spec:
              api: {api}
              url: ${{{api.upper()}_URL}}
              auth: {BACKUP_AUTH[api]}
            """,
        )

    def element_connection(self, name: str = "element-main") -> Path:
        return self.backup_connection("element", name)

    def vcda_connection(self, name: str = "vcda-main") -> Path:
        return self.backup_connection("vcda", name)

    def commvault_connection(self, name: str = "commvault-main") -> Path:
        return self.backup_connection("commvault", name)

    def policy(
        self,
        name: str,
        api: str,
        *,
        spec: str = "maxAge: 26h\nwait: 1m",
        connection: str | None = None,
        source: str | None = None,
    ) -> Path:
        """A BackupPolicy on ``api``'s connection; ``spec``: its keys other than the source."""
        body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
        return self.write(
            f"policies/{name}.yaml",
            f"apiVersion: converge/v1\nkind: BackupPolicy\nmetadata: {{name: {name}}}\nspec:\n"
            f"  connection: {connection or f'{api}-main'}\n{body}\n"
            f"  source:\n    {source or BACKUP_SOURCES[api]}\n",
        )


@pytest.fixture
def workspace(tmp_path: Path, emulator: Emulator) -> Workspace:
    return Workspace(tmp_path, emulator)


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked"


def assert_no_secrets_in_files(paths: list[Path]) -> None:
    for path in paths:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} leaked into {path}"


# -- backups: what tests/e2e/test_backups*.py back up ------------------------------------

# The application and subclient the backup tests back up.
ELEMENT_APP = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
COMMVAULT_SUBCLIENT = 123
# Each product's policy source, as a manifest writes it.
BACKUP_SOURCES = {
    "element": f"elementApplication: {{applicationId: {ELEMENT_APP}, includeUsers: true, "
    "includeBinaryData: true, description: converge e2e}",
    "vcda": 'vcdaAppliance: {password: "${VCDA_BACKUP_PASSWORD}"}',
    "commvault": "commvaultDynamoDB: {clientName: aws-prod, instanceName: DynamoDB, "
    "backupsetName: defaultBackupSet, subclientName: orders-tables, "
    f"subclientId: {COMMVAULT_SUBCLIENT}, backupLevel: INCREMENTAL}}",
}
BACKUP_AUTH = {
    "element": '{clientId: converge, clientSecret: "${ELEMENT_CLIENT_SECRET}"}',
    "vcda": '{type: localUser, user: admin, password: "${VCDA_PASSWORD}"}',
    "commvault": '{username: admin, password: "${COMMVAULT_PASSWORD}"}',
}
VCDA_ACCEPT = {"Accept": "application/vnd.vmware.h4-v4.7+json;charset=UTF-8"}
COMMVAULT_API = "/commvault/commandcenter/api"
