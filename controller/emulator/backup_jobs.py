"""The life of an emulated backup, shared by the element, vcda and commvault emulators.

All three products answer a backup request at once and finish the work later: an element
dump is "Creating" then "Ready", a vcda task QUEUED → RUNNING → SUCCEEDED, a commvault job
Running → Completed. Each emulator maps one :class:`Lifecycle` onto its own words. A
lifecycle is pure data computed against the injected clock, so tests move time instead of
sleeping and a restarted emulator (state reloaded from storage) carries on where it stopped.

``backup_apis.BackupEmulator`` starts lifecycles; the API modules render them.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

# Share of a run spent queued before work starts; vcda shows it as QUEUED, commvault's
# first poll can show the job as not yet known. Small, so progress is visible early.
QUEUED_SHARE = 0.1


class Phase(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Lifecycle:
    """When a backup started, how long it takes, and how it ends.

    ``duration`` None means it never ends on its own: a seeded in-progress backup that a
    test wants to stay "running".
    """

    started_at: float
    duration: float | None
    fails: bool = False
    message: str = ""

    @property
    def finished_at(self) -> float | None:
        return None if self.duration is None else self.started_at + self.duration

    def phase(self, now: float) -> Phase:
        end = self.finished_at
        if end is not None and now >= end:
            return Phase.FAILED if self.fails else Phase.SUCCEEDED
        if self.duration is not None and now < self.started_at + self.duration * QUEUED_SHARE:
            return Phase.QUEUED
        return Phase.RUNNING

    def progress(self, now: float) -> int:
        """0–100; 100 only once finished (a failure keeps the share it reached)."""
        phase = self.phase(now)
        if phase is Phase.SUCCEEDED:
            return 100
        if phase is Phase.FAILED:
            # A failure stops part-way; fixed at two thirds so answers are deterministic.
            return 66
        if self.duration is None:
            return 50  # a seeded backup that never ends: "somewhere in the middle"
        if self.duration <= 0:
            return 0
        share = (now - self.started_at) / self.duration
        return max(0, min(99, int(share * 100)))

    def last_update(self, now: float) -> float:
        """The time of the latest change a server would report (start, ticks, end)."""
        end = self.finished_at
        if end is not None and now >= end:
            return end
        return max(self.started_at, now)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lifecycle:
        return cls(
            started_at=float(data["started_at"]),
            duration=None if data.get("duration") is None else float(data["duration"]),
            fails=bool(data.get("fails", False)),
            message=str(data.get("message", "")),
        )


def seeded(
    *, now: float, age_seconds: float, took: float, phase: Phase, message: str = ""
) -> Lifecycle:
    """A lifecycle that looks ``age_seconds`` old.

    A finished backup *ended* ``age_seconds`` ago (that is what a recovery-point check
    measures) after running ``took`` seconds; an unfinished one *started* that long ago and
    never ends by itself.
    """
    if phase.finished:
        end = now - age_seconds
        return Lifecycle(
            started_at=end - took,
            duration=took,
            fails=phase is Phase.FAILED,
            message=message,
        )
    return Lifecycle(started_at=now - age_seconds, duration=None, message=message)
