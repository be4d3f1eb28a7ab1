"""The one protocol the three backup products share, and the live backup it returns.

Implemented by ``element.py``, ``vcda.py`` and ``commvault.py``; read by fetching (to
build a policy's live view), by ``controller.policies`` (due-ness and retention) and by
applying (trigger, poll, expire). The planner never knows which product it talks to.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Protocol

from controller.manifests import BackupPolicy


class BackupState(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RUNNING = "running"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LiveBackup:
    id: str  # dump id / backup id or task id / job id
    state: BackupState
    created: datetime | None  # UTC; when it was made (success) or started
    finished: datetime | None
    message: str = ""  # the server's own words for a failure
    progress: int | None = None

    @property
    def done(self) -> bool:
        return self.state is not BackupState.RUNNING


class BackupApi(Protocol):
    def list_backups(self, policy: BackupPolicy) -> list[LiveBackup]:
        """The backups that count for ``policy``, running ones included."""
        ...

    def trigger(self, policy: BackupPolicy) -> str:
        """Start one backup (never two after a lost answer); returns the handle to poll."""
        ...

    def poll(self, policy: BackupPolicy, handle: str) -> LiveBackup: ...

    def delete(self, policy: BackupPolicy, backup_id: str) -> None: ...

    def close(self) -> None: ...
