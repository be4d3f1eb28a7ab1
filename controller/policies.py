"""Backup due-ness and retention: what a BackupPolicy's live backups mean. Pure.

Called by planning (a ``backup`` action for each due policy, an ``expire`` action for each
backup retention removes) and by the CLI's status views. No I/O and no clock: ``now`` is
a parameter, a tz-aware UTC datetime. The only croniter importer, and only inside the
functions that need it: croniter and dateutil take ~20 ms to import, which a run over an
estate without backup policies (and ``converge validate`` of one) never needs to spend.

Schedules and daylight saving time. Slots are computed by croniter on datetimes aware of
the policy's zone, then normalised to one instant per wall-clock slot, as cron daemons do:
- a slot in a skipped hour (02:30 on a spring-forward night) happens at the first instant
  after the gap (03:00 local), so the day still has its slot;
- a slot in a repeated hour (02:30 on a fall-back night) happens once, at its first
  occurrence, so a daily backup is not asked for twice an hour apart. Schedules that fire
  every hour keep both occurrences: for them the second 02:00 is a real hour later.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from controller import durations
from controller.clients.backups import BackupState, LiveBackup
from controller.manifests import BackupPolicy

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

# A fall-back night repeats at most this much wall-clock time (2h: historical "double
# summer time"); searching this far ahead of now's wall time finds every slot whose
# instant is still at or before now.
_DST_SLACK = timedelta(hours=3)
# Bound on cron iterations per question: an every-minute schedule needs ~360 steps to
# cross the slack window; nothing sensible needs more.
_MAX_STEPS = 2000


class PolicyState(enum.StrEnum):
    COMPLIANT = "compliant"
    OVERDUE = "overdue"
    RUNNING = "running"
    FAILING = "failing"
    NEVER = "never"
    SUSPENDED = "suspended"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PolicyStatus:
    state: PolicyState
    due: bool
    reason: str  # for humans only: nothing branches on it
    last_success: datetime | None  # the newest success's recovery point, UTC
    age_seconds: float | None  # None when there is no success
    # The policy's maxAge, or for schedule-only policies the interval between the two
    # latest slots (what "fresh" means for it); None when neither can be told.
    max_age_seconds: float | None
    newest_failure_message: str | None = None  # when the newest finished attempt failed
    running_backup_id: str | None = None


def evaluate(policy: BackupPolicy, backups: Sequence[LiveBackup], *, now: datetime) -> PolicyStatus:
    """The policy's state and whether a backup should be triggered now."""
    _require_aware(now)
    successes = _successes_newest_first(backups)
    newest = successes[0] if successes else None
    last_success = _recovery_point(newest) if newest else None
    age = (now - last_success).total_seconds() if last_success else None

    slots = _latest_slots(policy, now) if policy.schedule else ()
    max_age = policy.max_age
    if max_age is None and len(slots) == 2:
        max_age = (slots[0] - slots[1]).total_seconds()

    newest_attempt = _newest_finished(backups)
    failure = (
        newest_attempt.message or "no message from the server"
        if newest_attempt and newest_attempt.state is BackupState.FAILED
        else None
    )
    running = sorted(
        (b for b in backups if b.state is BackupState.RUNNING), key=lambda b: _sort_key(b)
    )

    def status(*, state: PolicyState, due: bool, reason: str) -> PolicyStatus:
        return PolicyStatus(
            state=state,
            due=due,
            reason=reason,
            last_success=last_success,
            age_seconds=age,
            max_age_seconds=max_age,
            newest_failure_message=failure,
            running_backup_id=running[-1].id if running else None,
        )

    if policy.suspend:
        return status(state=PolicyState.SUSPENDED, due=False, reason="suspended: report only")
    if running:
        # Never a second backup while one is in progress, whatever the schedule says.
        return status(
            state=PolicyState.RUNNING, due=False, reason=f"backup {running[-1].id} in progress"
        )
    if failure is not None:
        return status(
            state=PolicyState.FAILING, due=True, reason=f"newest backup attempt failed: {failure}"
        )
    if last_success is None:
        return status(state=PolicyState.NEVER, due=True, reason="no successful backup yet")

    reasons = []
    if policy.max_age is not None and age is not None and age > policy.max_age:
        reasons.append(
            f"newest success {durations.humanize(age)} ago exceeds maxAge "
            f"{durations.humanize(policy.max_age)}"
        )
    if slots and last_success < slots[0]:
        reasons.append(f"no backup since the {_slot_text(slots[0], policy, now)} slot")
    if reasons:
        return status(state=PolicyState.OVERDUE, due=True, reason="; ".join(reasons))
    return status(
        state=PolicyState.COMPLIANT,
        due=False,
        reason=f"newest success {durations.humanize(age or 0)} ago",
    )


def expirable(
    policy: BackupPolicy,
    backups: Sequence[LiveBackup],
    owned_ids: set[str],
    *,
    now: datetime,
) -> list[LiveBackup]:
    """The backups retention removes now, oldest first.

    Only successes this policy made (``owned_ids``, from the state) are candidates: a
    backup someone else made is never ours to delete, and a running or failed one is left
    to the product. The newest success overall always stays, whatever the rules say, so
    retention can never leave a policy with nothing to restore.

    ``keepLast`` counts the owned successes, newest first: foreign backups never push ours
    out. When both ``keepLast`` and ``maxAge`` are set, a backup goes when *either* rule
    says so (the stricter reading), because retention exists to bound storage and a user
    who wrote both wants both bounds to hold.
    """
    _require_aware(now)
    retention = policy.retention
    if retention is None or (retention.keep_last is None and retention.max_age is None):
        return []
    successes = _successes_newest_first(backups)
    if not successes:
        return []
    keeper = successes[0].id
    owned = [b for b in successes if b.id in owned_ids]
    expired = []
    for rank, backup in enumerate(owned):
        if backup.id == keeper:
            continue
        by_count = retention.keep_last is not None and rank >= retention.keep_last
        point = _recovery_point(backup)
        by_age = (
            retention.max_age is not None
            and point is not None
            and (now - point).total_seconds() > retention.max_age
        )
        if by_count or by_age:
            expired.append(backup)
    return list(reversed(expired))


def is_valid_schedule(expression: str) -> bool:
    """For validating: whether croniter accepts ``expression``."""
    from croniter import croniter

    return bool(croniter.is_valid(expression))


# Any fixed instant will do: whether some date matches does not depend on where one starts.
_FIRES_FROM = datetime(2000, 1, 1, tzinfo=UTC)


def schedule_fires(expression: str) -> bool:
    """For validating: whether a valid ``expression`` matches any date at all.

    "0 0 30 2 *" (30 February) is valid cron that never fires; croniter then fails to find
    a slot, which a plan would meet as an internal error. 29 February does fire.
    """
    from croniter import CroniterBadDateError, croniter

    try:
        croniter(expression, _FIRES_FROM).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _successes_newest_first(backups: Iterable[LiveBackup]) -> list[LiveBackup]:
    successes = [b for b in backups if b.state is BackupState.SUCCEEDED]
    return sorted(successes, key=_sort_key, reverse=True)


def _newest_finished(backups: Iterable[LiveBackup]) -> LiveBackup | None:
    finished = [b for b in backups if b.state is not BackupState.RUNNING]
    return max(finished, key=_sort_key, default=None)


def _recovery_point(backup: LiveBackup) -> datetime | None:
    # When the data was taken: a backup that started before a slot does not hold the
    # data of that slot, even if it finished after it.
    return backup.created or backup.finished


def _sort_key(backup: LiveBackup) -> tuple[datetime, datetime, str]:
    floor = datetime.min.replace(tzinfo=UTC)
    point = backup.finished or backup.created or floor
    return (point, backup.created or floor, backup.id)


def _latest_slots(policy: BackupPolicy, now: datetime) -> tuple[datetime, ...]:
    """The two most recent slot instants at or before ``now`` (UTC, newest first)."""
    from croniter import croniter

    assert policy.schedule is not None
    zone = _zone(policy)
    hourly = _covers_every_hour(policy.schedule)
    start = (now + _DST_SLACK).astimezone(zone)
    cron = croniter(policy.schedule, start)
    found: list[datetime] = []
    for _ in range(_MAX_STEPS):
        slot = _normalise(cron.get_prev(datetime), zone, hourly=hourly)
        if slot is None or slot > now or (found and slot >= found[-1]):
            continue
        found.append(slot)
        if len(found) == 2:
            break
    return tuple(found)


def _zone(policy: BackupPolicy) -> ZoneInfo:
    from zoneinfo import ZoneInfo  # ~3 ms of start-up, for schedules only (as croniter)

    return ZoneInfo(policy.timezone or "UTC")


def _normalise(slot: datetime, zone: ZoneInfo, *, hourly: bool) -> datetime | None:
    """The slot's instant in UTC, or None for the repeat of a wall time already run."""
    wall = slot.replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    instant = slot.astimezone(UTC)
    if instant != first and first.astimezone(zone).replace(tzinfo=None) == wall:
        # The same wall time existed an hour earlier: this is its second occurrence.
        return instant if hourly else None
    return instant


def _covers_every_hour(expression: str) -> bool:
    from croniter import croniter

    hours = croniter(expression).expanded[1]
    return hours == ["*"] or len(hours) == 24


def _slot_text(slot: datetime, policy: BackupPolicy, now: datetime) -> str:
    zone = _zone(policy)
    local = slot.astimezone(zone)
    if local.date() == now.astimezone(zone).date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("policies need a timezone-aware 'now'")
