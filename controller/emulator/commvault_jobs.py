"""Reading the request bodies of the emulated Commvault API: backup tasks and job filters.

Used by ``commvault.CommvaultApi``; kept apart so the API module holds the state machine
and this one the documented shapes (``spec/apis.md`` §4, ``seeds/003_*.txt``). A body
the server refuses raises :class:`Refused`, which the API answers in Commvault's
``{"errorCode", "errorMessage"}`` form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from controller.emulator import core
from controller.emulator.backup_apis import check_keys
from controller.emulator.backup_jobs import Phase

# backupLevel → the jobSummary's backupLevelName.
LEVELS = {
    "FULL": "Full",
    "INCREMENTAL": "Incremental",
    "DIFFERENTIAL": "Differential",
    "SYNTHETIC_FULL": "Synthetic Full",
}

INVALID_INPUT = 2  # Commvault's errorCode for a body it cannot use
NOT_FOUND = 4  # ... and for an entity it does not know

# How far back finished jobs are listed when the filter does not say (Commvault's default).
DEFAULT_LOOKUP_SECONDS = 86_400
_SORT_FIELDS = ("jobId", "jobStartTime", "jobEndTime", "lastUpdateTime")
_FINISHED_WORDS = ("completed", "committed", "failed", "killed")
_UNSUCCESSFUL = frozenset({"failed", "killed", "failed to start"})


class Refused(Exception):
    """A request Commvault refuses: its errorCode, the HTTP status under the 4xx variant."""

    def __init__(self, code: int, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def _invalid(message: str) -> Refused:
    return Refused(INVALID_INPUT, 400, message)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BackupTask:
    """The parts of a CreateTask body that say what to back up, and how."""

    client_name: str
    instance_name: str
    subclient_id: int
    backupset_name: str | None
    subclient_name: str | None
    backup_level: str

    def subclient_record(self) -> dict[str, Any]:
        return {
            "clientName": self.client_name,
            "instanceName": self.instance_name,
            "backupsetName": self.backupset_name or "defaultBackupSet",
            "subclientName": self.subclient_name or f"subclient-{self.subclient_id}",
            "subclientId": self.subclient_id,
        }

    def check_matches(self, subclient: Mapping[str, Any]) -> None:
        """The names given must be the subclient's own (compared as Commvault does, any case)."""
        given = {
            "clientName": self.client_name,
            "instanceName": self.instance_name,
            "backupsetName": self.backupset_name,
            "subclientName": self.subclient_name,
        }
        for key, value in given.items():
            if value is not None and value.lower() != str(subclient[key]).lower():
                raise Refused(
                    NOT_FOUND,
                    404,
                    f"{key} {value!r} does not match subclient {self.subclient_id} "
                    f"({subclient[key]!r})",
                )


def parse_task(body: Any) -> BackupTask:
    """A CreateTask body → what to back up; :class:`Refused` when it is not usable."""
    info = body.get("taskInfo") if isinstance(body, dict) else None
    if not isinstance(info, dict):
        raise _invalid("taskInfo is required")
    associations = info.get("associations")
    if not isinstance(associations, list) or not associations:
        raise _invalid("taskInfo.associations must name one subclient")
    association = associations[0]
    if not isinstance(association, dict):
        raise _invalid("taskInfo.associations[0] must be an object")
    for key in ("clientName", "instanceName"):
        if not isinstance(association.get(key), str) or not association[key]:
            raise _invalid(f"associations[0].{key} is required")
    subclient_id = association.get("subclientId")
    if isinstance(subclient_id, str) and subclient_id.isdigit():
        subclient_id = int(subclient_id)
    if isinstance(subclient_id, bool) or not isinstance(subclient_id, int) or subclient_id <= 0:
        raise _invalid("associations[0].subclientId is required (a positive integer)")
    task = info.get("task", {})
    if not isinstance(task, dict) or task.get("taskType", 1) != 1:
        raise _invalid("only immediate tasks (task.taskType 1) are supported")
    sub_tasks = info.get("subTasks", [{}])
    first = sub_tasks[0] if isinstance(sub_tasks, list) and sub_tasks else None
    if not isinstance(first, dict):
        raise _invalid("taskInfo.subTasks must hold one backup sub-task")
    sub_task = first.get("subTask", {})
    if not isinstance(sub_task, dict) or (
        sub_task.get("subTaskType", 2),
        sub_task.get("operationType", 2),
    ) != (2, 2):
        raise _invalid("only backup sub-tasks (subTaskType 2, operationType 2) are supported")
    options = first.get("options", {})
    backup_opts = options.get("backupOpts", {}) if isinstance(options, dict) else None
    level = backup_opts.get("backupLevel", "INCREMENTAL") if isinstance(backup_opts, dict) else 0
    if not isinstance(level, str) or level.upper() not in LEVELS:
        raise _invalid(f"backupLevel must be one of {', '.join(LEVELS)}")
    names = {key: association.get(key) for key in ("backupsetName", "subclientName")}
    for key, value in names.items():
        if value is not None and not isinstance(value, str):
            raise _invalid(f"associations[0].{key} must be a string")
    return BackupTask(
        client_name=association["clientName"],
        instance_name=association["instanceName"],
        subclient_id=subclient_id,
        backupset_name=names["backupsetName"],
        subclient_name=names["subclientName"],
        backup_level=level.upper(),
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobsQuery:
    """A ``POST /Jobs`` filter: which jobs, in what order, which page."""

    category: int  # 0 all, 1 active, 2 finished
    offset: int
    limit: int
    sort_field: str
    descending: bool
    lookup_seconds: float
    subclient_id: int | None
    backups_wanted: bool

    def wants(self, subclient_id: int, *, finished: bool, end: float | None, now: float) -> bool:
        if not self.backups_wanted:
            return False
        if self.subclient_id is not None and subclient_id != self.subclient_id:
            return False
        if self.category == 1 and finished:
            return False
        if self.category == 2 and not finished:
            return False
        # Finished jobs only count when they ended inside the lookup window.
        return not finished or (end is not None and end >= now - self.lookup_seconds)

    def page(self, jobs: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        """``(total before paging, the requested page)``, sorted as asked."""

        def key(job: dict[str, Any]) -> tuple[Any, Any]:
            summary = job["jobSummary"]
            return summary[self.sort_field], summary["jobId"]

        ordered = sorted(jobs, key=key, reverse=self.descending)
        return len(ordered), ordered[self.offset : self.offset + self.limit]


def jobs_query(body: Any) -> JobsQuery:
    """A ``POST /Jobs`` body → :class:`JobsQuery`; an empty body lists everything recent."""
    if not isinstance(body, dict):
        raise _invalid("the body must be a job filter object")
    paging = body.get("pagingConfig", {})
    job_filter = body.get("jobFilter", {})
    if not isinstance(paging, dict) or not isinstance(job_filter, dict):
        raise _invalid("pagingConfig and jobFilter must be objects")
    entity = job_filter.get("entity", {})
    if not isinstance(entity, dict):
        raise _invalid("jobFilter.entity must be an object")
    category = _integer(body, "category", 0)
    if category not in (0, 1, 2):
        raise _invalid("category must be 0 (all), 1 (active) or 2 (finished)")
    sort_field = paging.get("sortField", "jobId")
    if sort_field not in _SORT_FIELDS:
        raise _invalid(f"pagingConfig.sortField must be one of {', '.join(_SORT_FIELDS)}")
    types = job_filter.get("jobTypeList")
    subclient_id = entity.get("subclientId")
    return JobsQuery(
        category=category,
        offset=_integer(paging, "offset", 0),
        limit=_integer(paging, "limit", 100),
        sort_field=sort_field,
        # 1 is descending (newest first), 0 ascending.
        descending=_integer(paging, "sortDirection", 1) == 1,
        lookup_seconds=_integer(job_filter, "completedJobLookupTime", DEFAULT_LOOKUP_SECONDS),
        subclient_id=None if subclient_id is None else _integer(entity, "subclientId", 0),
        backups_wanted=not types or "Backup" in types,
    )


def _integer(source: Mapping[str, Any], key: str, default: int) -> int:
    value = source.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"{key} must be a non-negative integer")
    return value


def seed_phase(status: str) -> Phase:
    """Where a seeded job with this status word stands (apis.md §4's finished/succeeded rule)."""
    low = status.lower()
    if not any(word in low for word in _FINISHED_WORDS):
        return Phase.RUNNING
    return Phase.FAILED if low in _UNSUCCESSFUL else Phase.SUCCEEDED


def subclient_record(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A ``seed_subclient`` payload (snake_case) → the subclient as jobs show it."""
    check_keys(
        payload,
        {"subclient_id", "client_name", "instance_name", "backupset_name", "subclient_name"},
    )
    subclient_id = payload.get("subclient_id")
    if isinstance(subclient_id, str) and subclient_id.isdigit():
        subclient_id = int(subclient_id)
    if isinstance(subclient_id, bool) or not isinstance(subclient_id, int) or subclient_id <= 0:
        raise core.BadRequest("subclient_id must be a positive integer")
    names = {
        "clientName": payload.get("client_name", "cloud-account"),
        "instanceName": payload.get("instance_name", "DynamoDB"),
        "backupsetName": payload.get("backupset_name", "defaultBackupSet"),
        "subclientName": payload.get("subclient_name", f"subclient-{subclient_id}"),
    }
    for key, value in names.items():
        if not isinstance(value, str) or not value:
            raise core.BadRequest(f"{key} must be a non-empty string")
    return {**names, "subclientId": subclient_id}
