"""Turning Connection manifests into live clients for one run.

Called by orchestrating. One ``Clients`` per run holds one client (so one login) per
connection, made on first use and shared by every thread, and closes them all (logging
out) at the end. ``url: sandbox`` connections are served by the in-process emulator,
started once per run and persisted beside the state, with the emulator's own credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from controller.clients import backups as backup_clients
from controller.clients import http
from controller.clients.era import EraClient
from controller.errors import ConvergeError
from controller.manifests import (
    Api,
    BackupPolicy,
    CommvaultDynamoDBSource,
    Connection,
    ElementApplicationSource,
    Kind,
    Manifests,
)


class MissingSecretsError(ConvergeError):
    """Secrets a command needs are not in the environment."""


def require_secrets(
    manifests: Manifests, *, connections: Iterable[str], vcda_policies: Iterable[str] = ()
) -> None:
    """Refuse to start when a connection to a real server, or a vcda trigger, lacks its secret.

    ``validate`` accepts unset secret variables (it never uses them); a command that logs
    in or triggers a vcda backup does, so it fails here, before any call, naming each one.
    """
    needed = {
        (Kind.CONNECTION, name) for name in connections if not manifests.connection(name).is_sandbox
    }
    needed |= {(Kind.BACKUP_POLICY, name) for name in vcda_policies}
    missing = [str(u) for u in manifests.unset_secrets if (u.kind, u.name) in needed]
    if missing:
        raise MissingSecretsError(
            "secrets are not set in the environment:\n  " + "\n  ".join(missing)
        )


class Clients:
    """The live clients of one run, by connection name. Thread-safe."""

    def __init__(
        self,
        manifests: Manifests,
        *,
        sandbox_dir: Path,
        run_id: str,
        parallelism: int | None = None,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.manifests = manifests
        self.sandbox_dir = sandbox_dir
        self.run_id = run_id
        self.parallelism = parallelism
        self.session_options = session_options or {}
        self._lock = threading.Lock()
        self._era: dict[str, EraClient] = {}
        self._backups: dict[str, backup_clients.BackupApi] = {}
        self._sandbox: Any = None  # EmulatorServer, imported only when a sandbox is used

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def era(self, name: str) -> EraClient:
        with self._lock:
            if name not in self._era:
                connection = self.manifests.connection(name)
                settings, auth = self._endpoint(connection)
                self._era[name] = EraClient.connect(settings, auth, **self.session_options)
            return self._era[name]

    def concurrency(self, name: str) -> int:
        """Most requests at once to connection ``name``: what its client's semaphore allows."""
        return self.parallelism or self.manifests.connection(name).concurrency

    def backups(self, name: str) -> backup_clients.BackupApi:
        with self._lock:
            if name not in self._backups:
                connection = self.manifests.connection(name)
                settings, auth = self._endpoint(connection)
                self._backups[name] = backup_clients.open_backup_api(
                    connection.api, settings, auth, operation_id=self.run_id, **self.session_options
                )
            return self._backups[name]

    def close(self) -> None:
        with self._lock:
            clients: list[Any] = [*self._era.values(), *self._backups.values()]
            self._era.clear()
            self._backups.clear()
            sandbox, self._sandbox = self._sandbox, None
        for client in clients:
            client.close()  # logs out; a failed logout never fails the run
        if sandbox is not None:
            sandbox.stop()

    # -- internals (called with self._lock held) --------------------------------------------

    def _endpoint(self, connection: Connection) -> tuple[http.HttpSettings, dict[str, str]]:
        overrides: dict[str, Any] = {"concurrency": self.concurrency(connection.name)}
        if not connection.is_sandbox:
            return http.HttpSettings.from_connection(connection, **overrides), dict(connection.auth)
        sandbox = self._start_sandbox()
        base_url = sandbox.url_for(connection.api.value)
        settings = http.HttpSettings.from_connection(connection, base_url=base_url, **overrides)
        return settings, dict(sandbox.apis[connection.api.value].credentials())

    def _start_sandbox(self) -> Any:
        if self._sandbox is None:
            from controller.emulator import sandbox  # only loaded when a manifest asks for it

            self._sandbox = sandbox.start_sandbox(self.sandbox_dir)
            _seed_sandbox_sources(self._sandbox.url, self.manifests)
        return self._sandbox


def _seed_sandbox_sources(url: str, manifests: Manifests) -> None:
    """Give the sandbox the applications and subclients the policies back up.

    A real Element account already has its applications and a real Commvault its
    subclients; the sandbox starts empty, so it learns them from the manifests (over its
    control plane, as a user seeding it would). Seeding is idempotent.
    """
    sandboxed = {c.name for c in manifests.connections if c.is_sandbox}
    policies = [p for p in manifests.policies if p.connection in sandboxed]
    if not policies:
        return
    session = http.HttpSession(http.HttpSettings(base_url=url, connection="sandbox"))
    try:
        for policy in policies:
            action, payload = _seed_for(policy)
            if action:
                session.request("POST", f"/_control/{action}", json=payload, authenticated=False)
    finally:
        session.close()


def _seed_for(policy: BackupPolicy) -> tuple[str | None, dict[str, Any]]:
    source = policy.source
    if isinstance(source, ElementApplicationSource):
        return f"{Api.ELEMENT}/seed_application", {"id": source.application_id, "name": policy.name}
    if isinstance(source, CommvaultDynamoDBSource):
        # The control plane speaks snake_case (commvault_jobs.subclient_record).
        return f"{Api.COMMVAULT}/seed_subclient", {
            "client_name": source.client_name,
            "instance_name": source.instance_name,
            "backupset_name": source.backupset_name,
            "subclient_name": source.subclient_name or policy.name,
            "subclient_id": source.subclient_id,
        }
    return None, {}
