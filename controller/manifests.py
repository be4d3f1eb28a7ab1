"""Typed manifests: what validating produces and every later layer consumes.

Frozen data, no behaviour beyond naming. Built only by ``validating``; read by planning,
policies, the clients (connection settings) and rendering. Secret values live in
``Connection.auth`` and ``VcdaApplianceSource.password`` and nowhere else: nothing that
renders or stores may read those fields (``controller.redaction`` knows them by name).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec


class Api(enum.StrEnum):
    ERA = "era"
    ELEMENT = "element"
    VCDA = "vcda"
    COMMVAULT = "commvault"


class Kind(enum.StrEnum):
    CONNECTION = "Connection"
    ROLEAPP = "RoleApp"
    BACKUP_POLICY = "BackupPolicy"


SANDBOX_URL = "sandbox"
SECRET_AUTH_KEYS = frozenset({"password", "clientSecret", "token"})
API_VERSION = "converge/v1"


def _repr_without(record: msgspec.Struct, secret: str) -> str:
    """``repr(record)`` as msgspec writes it, less the field that holds a secret."""
    shown = ", ".join(
        f"{name}={getattr(record, name)!r}" for name in record.__struct_fields__ if name != secret
    )
    return f"{type(record).__name__}({shown})"


class SourceLocation(msgspec.Struct, frozen=True, order=True):
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Tls(msgspec.Struct, frozen=True, kw_only=True):
    verify: bool = True
    ca_file: str | None = None  # absolute path, resolved against the manifest's folder


class Connection(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    api: Api
    url: str  # a base URL, or SANDBOX_URL
    # Secret-bearing: keys as in manifests.md (domain/login/password, clientId/clientSecret,
    # type/user/password, username/password or token). Never rendered, never stored.
    auth: Mapping[str, str] = msgspec.field(default_factory=dict)  # never in repr()
    timeout: float = 30.0
    concurrency: int = 8
    rate_limit: float | None = None
    tls: Tls = msgspec.field(default_factory=Tls)
    labels: Mapping[str, str] = msgspec.field(default_factory=dict)
    source: SourceLocation

    @property
    def is_sandbox(self) -> bool:
        return self.url == SANDBOX_URL

    def __repr__(self) -> str:
        return _repr_without(self, "auth")


class Lifecycle(msgspec.Struct, frozen=True, kw_only=True):
    prevent_destroy: bool = False
    ignore_fields: tuple[str, ...] = ()


class RoleApp(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    connection: str
    # The managed fields exactly as written in the manifest (folder, title, roles,
    # svcscriptcode, opts): a key absent here is neither compared nor sent.
    fields: Mapping[str, Any]
    id: str | None = None  # spec.id: pins an existing live object
    archive: str | None = None  # absolute path of a .zip file or a directory
    lifecycle: Lifecycle = msgspec.field(default_factory=Lifecycle)
    labels: Mapping[str, str] = msgspec.field(default_factory=dict)
    source: SourceLocation

    @property
    def folder(self) -> str:
        return str(self.fields["folder"])

    @property
    def create_id(self) -> str:
        """The deterministic id a create uses, so a repeated create is found by LOOKUP."""
        return _create_id(self.connection, self.name)


@functools.cache
def _create_id(connection: str, name: str) -> str:
    # Cached: planning asks each roleapp twice. And uuid5 by hand: ``uuid.uuid5`` builds and
    # validates a UUID object only to format it, ~8 us where this takes ~1.2 us (every plan
    # computes one per declared roleapp). The hash of the namespace and "converge:" is
    # computed once and copied, and the version and variant are set on the hex digits:
    # 10,000 ids in 17 ms of CPU instead of 23. Same text as uuid5; tests/unit compares them.
    state = _PREFIX.copy()
    state.update(f"{connection}/{name}".encode())
    h = state.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_PREFIX = hashlib.sha1(uuid.NAMESPACE_URL.bytes + b"converge:")
# The RFC 4122 variant: the top two bits of the 17th hex digit are 10.
_VARIANT = {f"{n:x}": f"{0x8 | (n & 0x3):x}" for n in range(16)}


class Retention(msgspec.Struct, frozen=True, kw_only=True):
    keep_last: int | None = None
    max_age: float | None = None  # seconds


class ElementApplicationSource(msgspec.Struct, frozen=True, kw_only=True):
    application_id: str
    include_users: bool = True
    include_binary_data: bool = True
    include_collaboration_registration_data: bool = False
    description: str = ""


class VcdaApplianceSource(msgspec.Struct, frozen=True, kw_only=True):
    password: str  # the backup file's password: a secret, never in repr()

    def __repr__(self) -> str:
        return _repr_without(self, "password")


class CommvaultDynamoDBSource(msgspec.Struct, frozen=True, kw_only=True):
    client_name: str
    instance_name: str
    subclient_id: int
    backupset_name: str = "defaultBackupSet"
    subclient_name: str = ""
    backup_level: str = "INCREMENTAL"


BackupSource = ElementApplicationSource | VcdaApplianceSource | CommvaultDynamoDBSource


class BackupPolicy(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    connection: str
    source: BackupSource
    schedule: str | None = None  # cron expression
    timezone: str = "UTC"
    max_age: float | None = None  # seconds (the RPO)
    retention: Retention | None = None
    wait: float = 7200.0  # seconds; 0 = do not wait
    suspend: bool = False
    labels: Mapping[str, str] = msgspec.field(default_factory=dict)
    source_location: SourceLocation


class UnsetSecret(msgspec.Struct, frozen=True, kw_only=True):
    """A secret field whose environment variable is not set.

    Not a validation error (``validate`` runs in pre-commit and PR jobs without
    credentials, like ``terraform validate``); commands that would use the secret refuse
    to start without it.
    """

    kind: Kind
    name: str
    key: str  # e.g. spec.auth.password
    variable: str
    source: SourceLocation

    def __str__(self) -> str:
        where = f"{self.source.file}:{self.source.line}"
        return f"{where}: {self.key}: environment variable {self.variable} is not set"


class Manifests(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the given paths declare, validated, in a deterministic order."""

    connections: tuple[Connection, ...] = ()
    roleapps: tuple[RoleApp, ...] = ()
    policies: tuple[BackupPolicy, ...] = ()
    documents: int = 0
    unset_secrets: tuple[UnsetSecret, ...] = ()

    def secret_values(self) -> set[str]:
        """Every secret value the manifests carry, for last-resort redaction of output."""
        values = {v for c in self.connections for k, v in c.auth.items() if k in SECRET_AUTH_KEYS}
        values.update(
            p.source.password for p in self.policies if isinstance(p.source, VcdaApplianceSource)
        )
        return {v for v in values if v}

    def connection(self, name: str) -> Connection:
        for connection in self.connections:
            if connection.name == name:
                return connection
        raise KeyError(name)
