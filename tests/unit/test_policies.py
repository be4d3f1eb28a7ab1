"""controller.policies: states, due-ness (schedule, maxAge, DST) and retention, on a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller import policies
from controller.clients.backups import BackupState, LiveBackup
from controller.manifests import (
    BackupPolicy,
    ElementApplicationSource,
    Retention,
    SourceLocation,
)
from controller.policies import PolicyState

H = 3600.0
D = 86400.0


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def policy(**overrides: object) -> BackupPolicy:
    fields: dict[str, object] = {
        "name": "crm-nightly",
        "connection": "element-main",
        "source": ElementApplicationSource(application_id="3fa85f64-5717-4562-b3fc-2c963f66afa6"),
        "source_location": SourceLocation("backups.yaml", 1),
    }
    fields.update(overrides)
    return BackupPolicy(**fields)  # type: ignore[arg-type]


def ok(id: str, created: str, finished: str | None = None) -> LiveBackup:
    return LiveBackup(
        id=id,
        state=BackupState.SUCCEEDED,
        created=utc(created),
        finished=utc(finished) if finished else None,
    )


def failed(id: str, created: str, message: str = "disk full") -> LiveBackup:
    return LiveBackup(
        id=id,
        state=BackupState.FAILED,
        created=utc(created),
        finished=utc(created),
        message=message,
    )


def running(id: str, created: str) -> LiveBackup:
    return LiveBackup(id=id, state=BackupState.RUNNING, created=utc(created), finished=None)


NOW = "2024-06-10T12:00:00"

# (id, policy overrides, backups, now, expected state, due, reason)
CASES = [
    (
        "never",
        {"max_age": 26 * H},
        [],
        NOW,
        PolicyState.NEVER,
        True,
        "no successful backup yet",
    ),
    (
        "fresh-by-max-age",
        {"max_age": 26 * H},
        [ok("a", "2024-06-10T02:00:00")],
        NOW,
        PolicyState.COMPLIANT,
        False,
        "newest success 10h ago",
    ),
    (
        "max-age-exceeded",
        {"max_age": 26 * H},
        [ok("a", "2024-06-09T09:00:00")],
        NOW,
        PolicyState.OVERDUE,
        True,
        "newest success 27h ago exceeds maxAge 26h",
    ),
    (
        "max-age-boundary-exactly-equal-is-fresh",
        {"max_age": 26 * H},
        [ok("a", "2024-06-09T10:00:00")],
        NOW,
        PolicyState.COMPLIANT,
        False,
        "newest success 26h ago",
    ),
    (
        "max-age-boundary-one-second-over",
        {"max_age": 26 * H},
        [ok("a", "2024-06-09T09:59:59")],
        NOW,
        PolicyState.OVERDUE,
        True,
        "newest success 26h ago exceeds maxAge 26h",
    ),
    (
        "slot-just-missed",
        {"schedule": "0 2 * * *"},
        [ok("a", "2024-06-10T01:59:59")],
        NOW,
        PolicyState.OVERDUE,
        True,
        "no backup since the 02:00 slot",
    ),
    (
        "slot-just-met",
        {"schedule": "0 2 * * *"},
        [ok("a", "2024-06-10T02:00:00")],
        NOW,
        PolicyState.COMPLIANT,
        False,
        "newest success 10h ago",
    ),
    (
        "slot-at-exactly-now-counts",
        {"schedule": "0 12 * * *"},
        [ok("a", "2024-06-10T11:00:00")],
        NOW,
        PolicyState.OVERDUE,
        True,
        "no backup since the 12:00 slot",
    ),
    (
        "slot-of-an-earlier-day-shows-its-date",
        {"schedule": "0 2 * * 1"},  # Mondays; 2024-06-10 is a Monday, now before its slot
        [ok("a", "2024-06-02T02:00:00")],
        "2024-06-10T01:00:00",
        PolicyState.OVERDUE,
        True,
        "no backup since the 2024-06-03 02:00 slot",
    ),
    (
        "slot-in-policy-timezone",
        {"schedule": "0 2 * * *", "timezone": "Europe/Moscow"},  # 02:00 MSK = 23:00Z
        [ok("a", "2024-06-09T22:59:00")],
        NOW,
        PolicyState.OVERDUE,
        True,
        "no backup since the 02:00 slot",
    ),
    (
        "slot-in-policy-timezone-met",
        {"schedule": "0 2 * * *", "timezone": "Europe/Moscow"},
        [ok("a", "2024-06-09T23:00:00")],
        NOW,
        PolicyState.COMPLIANT,
        False,
        "newest success 13h ago",
    ),
    (
        "both-rules-overdue",
        {"schedule": "0 2 * * *", "max_age": 26 * H},
        [ok("a", "2024-06-09T01:00:00")],
        NOW,
        PolicyState.OVERDUE,
        True,
        "newest success 35h ago exceeds maxAge 26h; no backup since the 02:00 slot",
    ),
    (
        "running-blocks-a-second-trigger",
        {"schedule": "0 2 * * *", "max_age": 26 * H},
        [ok("a", "2024-06-01T02:00:00"), running("r1", "2024-06-10T11:55:00")],
        NOW,
        PolicyState.RUNNING,
        False,
        "backup r1 in progress",
    ),
    (
        "running-even-when-never-succeeded",
        {"max_age": 26 * H},
        [failed("f", "2024-06-10T10:00:00"), running("r1", "2024-06-10T11:00:00")],
        NOW,
        PolicyState.RUNNING,
        False,
        "backup r1 in progress",
    ),
    (
        "failing-newest-attempt",
        {"max_age": 26 * H},
        [ok("a", "2024-06-10T02:00:00"), failed("f", "2024-06-10T11:00:00", "quota exceeded")],
        NOW,
        PolicyState.FAILING,
        True,
        "newest backup attempt failed: quota exceeded",
    ),
    (
        "old-failure-then-success-is-not-failing",
        {"max_age": 26 * H},
        [failed("f", "2024-06-10T01:00:00"), ok("a", "2024-06-10T02:00:00")],
        NOW,
        PolicyState.COMPLIANT,
        False,
        "newest success 10h ago",
    ),
    (
        "failing-without-message",
        {"max_age": 26 * H},
        [failed("f", "2024-06-10T11:00:00", "")],
        NOW,
        PolicyState.FAILING,
        True,
        "newest backup attempt failed: no message from the server",
    ),
    (
        "suspended-reports-only",
        {"max_age": 26 * H, "suspend": True},
        [ok("a", "2024-06-01T00:00:00"), running("r", "2024-06-10T11:00:00")],
        NOW,
        PolicyState.SUSPENDED,
        False,
        "suspended: report only",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "backups", "now", "state", "due", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_evaluate(
    overrides: dict[str, object],
    backups: list[LiveBackup],
    now: str,
    state: PolicyState,
    due: bool,
    reason: str,
) -> None:
    status = policies.evaluate(policy(**overrides), backups, now=utc(now))
    assert (status.state, status.due, status.reason) == (state, due, reason)


def test_status_reports_age_and_limits() -> None:
    status = policies.evaluate(
        policy(max_age=26 * H), [ok("a", "2024-06-09T09:00:00")], now=utc(NOW)
    )
    assert status.last_success == utc("2024-06-09T09:00:00")
    assert status.age_seconds == 27 * H
    assert status.max_age_seconds == 26 * H
    assert status.newest_failure_message is None
    assert status.running_backup_id is None


def test_schedule_only_max_age_is_the_slot_interval() -> None:
    daily = policies.evaluate(policy(schedule="0 2 * * *"), [], now=utc(NOW))
    assert daily.max_age_seconds == D
    hourly = policies.evaluate(policy(schedule="15 * * * *"), [], now=utc(NOW))
    assert hourly.max_age_seconds == H
    assert daily.age_seconds is None and daily.last_success is None


def test_suspended_still_reports_last_success_and_running() -> None:
    status = policies.evaluate(
        policy(max_age=26 * H, suspend=True),
        [ok("a", "2024-06-10T06:00:00"), running("r", "2024-06-10T11:00:00")],
        now=utc(NOW),
    )
    assert status.last_success == utc("2024-06-10T06:00:00")
    assert status.age_seconds == 6 * H
    assert status.running_backup_id == "r"


def test_failure_message_is_reported() -> None:
    status = policies.evaluate(
        policy(max_age=H), [failed("f", "2024-06-10T11:00:00", "no space")], now=utc(NOW)
    )
    assert status.newest_failure_message == "no space"
    assert status.last_success is None


def test_recovery_point_is_when_the_backup_started() -> None:
    # Started before the slot, finished after it: it does not hold the slot's data.
    backups = [ok("a", "2024-06-10T01:50:00", finished="2024-06-10T02:20:00")]
    status = policies.evaluate(policy(schedule="0 2 * * *"), backups, now=utc(NOW))
    assert status.state is PolicyState.OVERDUE


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        policies.evaluate(policy(max_age=H), [], now=datetime(2024, 6, 10))


# --- daylight saving time -----------------------------------------------------------------
# Europe/Berlin: 2024-03-31 02:00 CET → 03:00 CEST (01:00Z); 2024-10-27 03:00 CEST → 02:00 CET
# (01:00Z). America/New_York: 2024-03-10 02:00 EST → 03:00 EDT (07:00Z); 2024-11-03 02:00
# EDT → 01:00 EST (06:00Z).

DST_CASES = [
    # A slot in the skipped hour happens at the first instant after the gap (03:00 CEST).
    ("berlin-spring-before-gap", "Europe/Berlin", "30 2 * * *",
     "2024-03-30T01:30:00", "2024-03-31T00:59:00", False, None),
    ("berlin-spring-skipped-slot-fires-after-gap", "Europe/Berlin", "30 2 * * *",
     "2024-03-30T01:30:00", "2024-03-31T01:00:00", True, "no backup since the 03:00 slot"),
    ("berlin-spring-skipped-slot-met", "Europe/Berlin", "30 2 * * *",
     "2024-03-31T01:00:00", "2024-03-31T05:00:00", False, None),
    # A slot in the repeated hour happens once, at its first occurrence (02:30 CEST = 00:30Z).
    ("berlin-fall-first-occurrence-due", "Europe/Berlin", "30 2 * * *",
     "2024-10-26T00:30:00", "2024-10-27T00:31:00", True, "no backup since the 02:30 slot"),
    ("berlin-fall-second-occurrence-not-due-again", "Europe/Berlin", "30 2 * * *",
     "2024-10-27T00:35:00", "2024-10-27T01:45:00", False, None),
    ("new-york-spring-skipped-slot", "America/New_York", "30 2 * * *",
     "2024-03-09T07:30:00", "2024-03-10T07:05:00", True, "no backup since the 03:00 slot"),
    ("new-york-fall-repeat-not-due-again", "America/New_York", "30 1 * * *",
     "2024-11-03T05:31:00", "2024-11-03T06:45:00", False, None),
    ("new-york-fall-first-occurrence-due", "America/New_York", "30 1 * * *",
     "2024-11-02T05:30:00", "2024-11-03T05:40:00", True, "no backup since the 01:30 slot"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "cron", "success", "now", "due", "reason"),
    [case[1:] for case in DST_CASES],
    ids=[case[0] for case in DST_CASES],
)
def test_schedule_across_dst(
    zone: str, cron: str, success: str, now: str, due: bool, reason: str | None
) -> None:
    status = policies.evaluate(
        policy(schedule=cron, timezone=zone), [ok("a", success)], now=utc(now)
    )
    assert status.due is due, status.reason
    if reason is not None:
        assert status.reason == reason


def test_hourly_schedule_keeps_both_occurrences_of_a_repeated_hour() -> None:
    # 02:00 CEST (00:00Z) and 02:00 CET (01:00Z) are both real hourly slots.
    status = policies.evaluate(
        policy(schedule="0 * * * *", timezone="Europe/Berlin"),
        [ok("a", "2024-10-27T00:10:00")],
        now=utc("2024-10-27T01:05:00"),
    )
    assert status.due and status.reason == "no backup since the 02:00 slot"
    assert status.max_age_seconds == H


def test_daily_interval_across_spring_forward_is_23_hours() -> None:
    status = policies.evaluate(
        policy(schedule="0 12 * * *", timezone="Europe/Berlin"), [], now=utc("2024-03-31T12:00:00")
    )
    assert status.max_age_seconds == 23 * H


def test_schedule_validation() -> None:
    assert policies.is_valid_schedule("0 2 * * *")
    assert not policies.is_valid_schedule("not a cron")


# --- retention ---------------------------------------------------------------------------


def days_ago(n: float) -> str:
    return (utc(NOW) - timedelta(days=n)).replace(tzinfo=None).isoformat()


SERIES = [ok(f"b{n}", days_ago(n)) for n in range(10)]  # b0 newest ... b9 oldest


def expired_ids(
    retention: Retention | None, backups: list[LiveBackup], owned: set[str]
) -> list[str]:
    found = policies.expirable(policy(max_age=D, retention=retention), backups, owned, now=utc(NOW))
    return [b.id for b in found]


def test_keep_last_removes_the_oldest_owned_oldest_first() -> None:
    owned = {b.id for b in SERIES}
    assert expired_ids(Retention(keep_last=7), SERIES, owned) == ["b9", "b8", "b7"]


def test_max_age_removes_older_owned_successes() -> None:
    owned = {b.id for b in SERIES}
    assert expired_ids(Retention(max_age=7.5 * D), SERIES, owned) == ["b9", "b8"]


def test_either_rule_expires_when_both_are_set() -> None:
    owned = {b.id for b in SERIES}
    assert expired_ids(Retention(keep_last=8, max_age=6.5 * D), SERIES, owned) == [
        "b9",
        "b8",
        "b7",
    ]


def test_foreign_backups_are_never_expired_nor_counted() -> None:
    owned = {"b1", "b3", "b5", "b7", "b9"}
    assert expired_ids(Retention(keep_last=2), SERIES, owned) == ["b9", "b7", "b5"]
    assert expired_ids(Retention(max_age=0.0), SERIES, set()) == []


def test_newest_success_always_stays() -> None:
    owned = {b.id for b in SERIES}
    assert "b0" not in expired_ids(Retention(keep_last=0), SERIES, owned)
    assert len(expired_ids(Retention(keep_last=0), SERIES, owned)) == 9
    only = [ok("solo", days_ago(400))]
    assert expired_ids(Retention(max_age=1.0), only, {"solo"}) == []


def test_newest_success_stays_even_when_foreign_is_newer() -> None:
    # The newest overall is foreign; our own newest may then go under a strict rule.
    backups = [ok("mine-new", days_ago(1)), ok("foreign", days_ago(0))]
    assert expired_ids(Retention(keep_last=0), backups, {"mine-new"}) == ["mine-new"]


def test_running_and_failed_are_never_expired() -> None:
    backups = [
        *SERIES[:2],
        running("r", days_ago(20)),
        failed("f", days_ago(30)),
    ]
    owned = {"b0", "b1", "r", "f"}
    assert expired_ids(Retention(keep_last=1, max_age=1.0), backups, owned) == ["b1"]


def test_no_retention_expires_nothing() -> None:
    owned = {b.id for b in SERIES}
    assert expired_ids(None, SERIES, owned) == []
    assert expired_ids(Retention(), SERIES, owned) == []


@pytest.mark.parametrize(
    ("expression", "fires"),
    [
        ("0 0 29 2 *", True),  # every fourth year
        ("0 0 30 2 *", False),
        ("0 3 31 11 *", False),
        ("0 0 30 2 1", True),  # day of month OR weekday, as cron means it: every Monday too
        ("@yearly", True),
        ("*/5 * * * *", True),
    ],
)
def test_schedule_fires_only_when_some_date_matches(expression: str, fires: bool) -> None:
    assert policies.schedule_fires(expression) is fires
