"""The Plan: what ``apply`` would do, as inert data.

Built only by ``controller.planning``; read by ``controller.rendering`` (to show it, and to
save and re-load it for ``apply --plan FILE``), by ``applying`` (to execute it) and by the
CLI (guards, exit codes). Nothing here talks to an API or a clock, and nothing here
decides anything: behaviour stops at naming and counting (Terraform ``internal/plans``).

Applying never branches on ``Action.reason``: it is for humans. What applying needs lives
in typed fields: ``desired`` (the entity a create POSTs, id included), ``patch`` (the body
an update or adopt PATCHes), ``archive`` (the zip to upload and its MD5), ``backup_id``
(what an expire deletes) and ``fingerprint`` (the live object the action was computed
from, for the stale-plan check).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

PLAN_FORMAT = "converge.plan/v1"


class ActionKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ADOPT = "adopt"
    ARCHIVE = "archive"
    BACKUP = "backup"
    EXPIRE = "expire"


class Ref(msgspec.Struct, frozen=True, order=True):
    """A declared object's identity in git: ``RoleApp/era-main/chat-operator``."""

    kind: str
    connection: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.connection}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> Ref:
        kind, connection, name = text.split("/", 2)
        return cls(kind, connection, name)


class FieldChange(msgspec.Struct, frozen=True, kw_only=True):
    """One managed field whose live value differs: ``path`` is dotted (``opts.visible``).

    ``sensitive`` changes are shown as ``(sensitive, changed)`` everywhere; their values
    stay in memory for applying and are never rendered.
    """

    path: str
    before: Any
    after: Any
    sensitive: bool = False


class ArchiveUpload(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # absolute path of the .zip file or the directory to zip
    md5: str  # lower-case hex of the bytes to upload, as computed by the caller


class Action(msgspec.Struct, frozen=True, kw_only=True):
    kind: ActionKind
    ref: Ref
    reason: str  # for humans only: applying never branches on it
    id: str | None = None  # the live object's id (the backup's id for an expire)
    changes: tuple[FieldChange, ...] = ()
    source: str | None = None  # "manifests/era.yaml:12"; None for deletes and expires
    # Of the live object read at plan time; None when there was none (a create).
    fingerprint: str | None = None
    desired: Mapping[str, Any] | None = None  # create: the whole entity to POST, id included
    patch: Mapping[str, Any] | None = None  # update, adopt: only the fields to PATCH
    archive: ArchiveUpload | None = None  # archive: what to upload
    backup_id: str | None = None  # expire: the backup retention removes


class Unmanaged(NamedTuple):
    """A live object converge never managed: reported, never touched."""

    connection: str
    id: str
    title: str


class Managed(msgspec.Struct, frozen=True, kw_only=True):
    """A declared object and the live id it resolved to.

    Applying records these in the inventory (with the manifest's current
    ``preventDestroy``) once the object's actions succeed, including objects with no
    action at all, so a flag flipped in git reaches the state without a field change.
    """

    ref: Ref
    id: str
    prevent_destroy: bool = False


class GuardViolation(msgspec.Struct, frozen=True, kw_only=True):
    """A reason the plan must not be applied. Data here; the CLI turns it into exit 4."""

    ref: Ref
    guard: str  # "preventDestroy", "conflict"
    message: str


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    created: datetime
    actions: tuple[Action, ...] = ()
    unchanged: int = 0  # declared objects with nothing to do
    # str(ref) → fingerprint of every live object an action touches; None means "must
    # still not exist" (a create): apply --plan refuses the whole plan if any differs.
    fingerprints: Mapping[str, str | None] = msgspec.field(default_factory=dict)
    managed: tuple[Managed, ...] = ()
    # Inventory entries to drop without any API call: their manifest is gone and so is
    # the live object, or another manifest now pins their id (a rename with spec.id).
    forget: tuple[Ref, ...] = ()
    unmanaged: tuple[Unmanaged, ...] = ()
    guard_violations: tuple[GuardViolation, ...] = ()
    format: str = PLAN_FORMAT

    def count(self, kind: ActionKind) -> int:
        return sum(1 for action in self.actions if action.kind is kind)

    @property
    def summary(self) -> dict[str, int]:
        """Every action kind's count (zeros included) and ``unchanged``, as cli.md shows."""
        counts = {kind.value: 0 for kind in ActionKind}
        for action in self.actions:
            counts[action.kind.value] += 1
        counts["unchanged"] = self.unchanged
        return counts

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)
