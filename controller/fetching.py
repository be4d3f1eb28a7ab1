"""Reading live state: every roleapp on the era connections, every policy's backups.

Called by orchestrating before planning (and again by ``apply --plan`` for the stale-plan
check). Connections and policies are read concurrently; each client bounds its own
connection's concurrency. Read-only: nothing here writes to an API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controller.clients.backups import LiveBackup
from controller.connecting import Clients
from controller.errors import ApiError, ConvergeError
from controller.manifests import BackupPolicy

# What planning, fingerprints and drift need of a roleapp; asking for less makes pages
# smaller. ext.lwt is here so that any write to an object changes its fingerprint.
ROLEAPP_FIELDS = ("id", "folder", "title", "roles", "svcscriptcode", "opts", "ext.lwt")
PAGE_SIZE = 500
# Reads of different connections and policies at once: each client still bounds its own.
MAX_PARALLEL_READS = 16


@dataclasses.dataclass(frozen=True, slots=True)
class LiveState:
    roleapps: dict[str, list[dict[str, Any]]]  # connection name → every live roleapp
    backups: dict[str, list[LiveBackup]]  # policy name → its live backups


class FetchError(ConvergeError):
    """Some live state could not be read: every failure, one per line."""

    def __init__(self, errors: Sequence[ApiError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def fetch(
    clients: Clients, *, era_connections: Iterable[str], policies: Sequence[BackupPolicy]
) -> LiveState:
    """Read everything at once; raise FetchError naming every read that failed."""
    jobs: list[tuple[str, str, Callable[[], Any]]] = []
    for name in sorted(set(era_connections)):
        jobs.append(("roleapps", name, _roleapp_reader(clients, name)))
    for policy in policies:
        jobs.append(("backups", policy.name, _backup_reader(clients, policy)))
    roleapps: dict[str, list[dict[str, Any]]] = {}
    backups: dict[str, list[LiveBackup]] = {}
    errors: list[ApiError] = []
    if not jobs:
        return LiveState(roleapps, backups)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_READS, len(jobs))) as pool:
        futures = [(what, key, pool.submit(reader)) for what, key, reader in jobs]
        for what, key, future in futures:
            try:
                value = future.result()
            except ApiError as exc:
                errors.append(exc)
                continue
            (roleapps if what == "roleapps" else backups)[key] = value
    if errors:
        raise FetchError(errors)
    return LiveState(roleapps, backups)


def _roleapp_reader(clients: Clients, name: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: clients.era(name).list_roleapps(fields=ROLEAPP_FIELDS, page_size=PAGE_SIZE)


def _backup_reader(clients: Clients, policy: BackupPolicy) -> Callable[[], list[LiveBackup]]:
    return lambda: clients.backups(policy.connection).list_backups(policy)
