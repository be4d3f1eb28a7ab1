"""End-to-end harness: a real emulator over loopback HTTP, and `converge` run as a user would.

The emulator runs in this process on 127.0.0.1 and a free port; converge runs as a
subprocess (`python -m controller`) in a temporary working directory, with manifests
written there and the emulator's credentials in its environment — nothing is mocked.
"""

from __future__ import annotations

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

    def run(self, *args: str, input: str | None = None) -> Result:
        completed = subprocess.run(
            [sys.executable, "-m", "controller", *args],
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
