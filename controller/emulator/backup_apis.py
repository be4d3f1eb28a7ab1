"""The base of the element, vcda and commvault emulators, and the control actions they share.

:class:`BackupEmulator` gives the three API classes their request plumbing through
``core.Harness`` (fault rules, call counts), sessions, persistent settings, and the control
actions they have in common — ``reset``, ``fail``, ``drop_after_work``, ``expire_sessions``,
``stats``, ``set_duration``, ``fail_next_backup``, ``set_session_lifetime``, ``set_variant``.
Each subclass adds its routes, its error shape and its own seeding actions; the backups'
progress over time is ``backup_jobs.Lifecycle``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from controller.emulator import core
from controller.emulator.backup_jobs import Lifecycle, Phase
from controller.emulator.storage import Storage

# --- the shared base of the three backup emulators ---------------------------------------

SESSIONS = "sessions"
SETTINGS = "settings"
# Counters and keys that must outlive ``reset``: an id handed out before a reset must never
# name a different backup afterwards (a client's state may still remember it).
META = "meta"

DEFAULT_DURATION = 0.5
DEFAULT_FAILURE_MESSAGE = "backup failed (injected by the emulator)"

# Stable namespace for the ids the emulators make: uuid5(namespace, "<mount>:<kind>:<n>").
_ID_NAMESPACE = uuid.UUID("5f0c4a52-3c1e-4d1b-9a57-6f2a1d7f3e10")


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """One switchable behaviour where the real product differs between versions or docs.

    ``choices`` lists the allowed values, the first being the default; no choices means
    any non-negative integer (``default`` then holds the default).
    """

    default: Any
    choices: tuple[Any, ...] = ()

    def parse(self, name: str, value: Any) -> Any:
        if self.choices:
            if value not in self.choices:
                allowed = ", ".join(repr(c) for c in self.choices)
                raise core.BadRequest(f"variant {name!r} must be one of {allowed}")
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise core.BadRequest(f"variant {name!r} must be a non-negative integer")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """An armed ``fail_next_backup``: how the next backup ends."""

    message: str
    status: str | None  # the product's own failed status word; None: the API's default


class BackupEmulator:
    """Base of ``ElementApi``, ``VcdaApi`` and ``CommvaultApi``; see the module docstring.

    Every call and control action runs under one lock: state changes are small and this
    keeps "read, compute from the clock, write" atomic across the server's threads.
    """

    mount: ClassVar[str] = ""
    VARIANTS: ClassVar[Mapping[str, Variant]] = {}
    DEFAULT_SESSION_SECONDS: ClassVar[float] = 1800.0

    def __init__(self, storage: Storage, *, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.clock = clock
        self.harness = core.Harness()
        self.lock = threading.RLock()
        self.counts: Counter[str] = Counter()

    # --- what subclasses provide --------------------------------------------------------

    def dispatch(self, request: core.EmuRequest) -> core.EmuResponse:
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> core.EmuResponse:
        raise NotImplementedError

    def api_control(self, action: str, payload: dict[str, Any]) -> Any:
        """The subclass's own control actions; ``NotImplemented`` for an unknown one."""
        return NotImplemented

    def credentials(self) -> dict[str, str]:
        raise NotImplementedError

    # --- the EmulatedApi protocol ---------------------------------------------------------

    def handle(self, request: core.EmuRequest) -> core.EmuResponse:
        with self.lock:
            return self.harness.run(request, self.dispatch, error_response=self.error_response)

    def control(self, action: str, payload: dict[str, Any]) -> Any:
        with self.lock:
            if action == "reset":
                check_keys(payload, set())
                for collection in (SESSIONS, SETTINGS, *self.collections()):
                    self.storage.clear(collection)
                self.harness.reset()
                self.counts.clear()
                return {"reset": self.mount}
            if action == "expire_sessions":
                count = self.storage.count(SESSIONS)
                self.storage.clear(SESSIONS)
                return {"expired": count}
            if action == "stats":
                return {**self.harness.control("stats", payload), **self.extra_stats()}
            if action == "set_duration":
                check_keys(payload, {"seconds"})
                seconds = number(payload, "seconds", None)
                self.storage.put(SETTINGS, "duration", seconds)
                return {"seconds": seconds}
            if action == "set_session_lifetime":
                check_keys(payload, {"seconds"})
                seconds = number(payload, "seconds", None)
                self.storage.put(SETTINGS, "session_seconds", seconds)
                return {"seconds": seconds}
            if action == "fail_next_backup":
                return self._arm_failure(payload)
            if action == "set_variant":
                return self._set_variants(payload)
            result = self.api_control(action, payload)
            if result is NotImplemented:
                return self.harness.control(action, payload)  # fail, drop_after_work
            return result

    def close(self) -> None:
        self.storage.close()

    # --- helpers for subclasses -------------------------------------------------------------

    def collections(self) -> tuple[str, ...]:
        """The subclass's own collections, emptied by ``reset``."""
        return ()

    def extra_stats(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items()))}

    def now(self) -> float:
        return float(self.clock())

    @property
    def duration(self) -> float:
        return float(self.storage.get(SETTINGS, "duration", DEFAULT_DURATION))

    @property
    def session_seconds(self) -> float:
        return float(self.storage.get(SETTINGS, "session_seconds", self.DEFAULT_SESSION_SECONDS))

    def variant(self, name: str) -> Any:
        return self.storage.get(SETTINGS, f"variant:{name}", self.VARIANTS[name].default)

    def variants(self) -> dict[str, Any]:
        return {name: self.variant(name) for name in sorted(self.VARIANTS)}

    def next_number(self, kind: str) -> int:
        """1, 2, 3, ... per kind, kept across ``reset`` and restarts."""
        number_ = int(self.storage.get(META, f"counter:{kind}", 0)) + 1
        self.storage.put(META, f"counter:{kind}", number_)
        return number_

    def new_uuid(self, kind: str) -> str:
        """A fresh, deterministic UUID (the n-th of its kind on this emulator)."""
        return str(uuid.uuid5(_ID_NAMESPACE, f"{self.mount}:{kind}:{self.next_number(kind)}"))

    def take_failure(self) -> Failure | None:
        """Consume one armed ``fail_next_backup``, if any."""
        armed = self.storage.get(SETTINGS, "fail_next")
        if not armed:
            return None
        times = int(armed["times"]) - 1
        if times > 0:
            self.storage.put(SETTINGS, "fail_next", {**armed, "times": times})
        else:
            self.storage.delete(SETTINGS, "fail_next")
        return Failure(message=str(armed["message"]), status=armed.get("status"))

    def start_lifecycle(self) -> tuple[Lifecycle, Failure | None]:
        """The lifecycle of a backup requested now, honouring ``fail_next_backup``."""
        self.counts["backups_started"] += 1
        failure = self.take_failure()
        return Lifecycle(
            started_at=self.now(),
            duration=self.duration,
            fails=failure is not None,
            message=failure.message if failure else "",
        ), failure

    # Sessions: one record per token, keyed by a lookup key the subclass chooses.

    def open_session(self, key: str, **data: Any) -> None:
        now = self.now()
        self.storage.put(SESSIONS, key, {**data, "created": now, "last_used": now})
        self.harness.stats.record_login(ok=True)

    def session(self, key: str, *, idle: bool) -> dict[str, Any] | None:
        """The live session, or None when unknown or expired.

        ``idle`` True: the lifetime counts from the last use and each use renews it
        (vcda, commvault); False: from the login (element's token lifetime). A session
        opened with ``permanent=True`` (a ready API token) never times out.
        """
        record = self.storage.get(SESSIONS, key)
        if record is None:
            return None
        since = record["last_used"] if idle else record["created"]
        if not record.get("permanent") and self.now() >= since + self.session_seconds:
            return None
        if idle:
            self.storage.put(SESSIONS, key, {**record, "last_used": self.now()})
        return dict(record)

    def close_session(self, key: str) -> bool:
        return self.storage.delete(SESSIONS, key)

    # --- shared control actions -----------------------------------------------------------

    def _arm_failure(self, payload: dict[str, Any]) -> dict[str, Any]:
        check_keys(payload, {"message", "status", "times"})
        armed = {
            "message": text(payload, "message", DEFAULT_FAILURE_MESSAGE),
            "status": text(payload, "status", None),
            "times": int(number(payload, "times", 1)),
        }
        if armed["times"] < 1:
            raise core.BadRequest("times must be at least 1")
        self.storage.put(SETTINGS, "fail_next", armed)
        return armed

    def _set_variants(self, payload: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(payload) - set(self.VARIANTS))
        if unknown:
            known = ", ".join(sorted(self.VARIANTS))
            raise core.BadRequest(f"unknown variant(s) {', '.join(unknown)}; known: {known}")
        for name, value in payload.items():
            self.storage.put(SETTINGS, f"variant:{name}", self.VARIANTS[name].parse(name, value))
        return self.variants()


def status_word(record: Mapping[str, Any], lifecycle: Lifecycle, phase: Phase) -> str | None:
    """The product word a test chose for a backup's state, where it applies; else None.

    ``record["status_word"]`` comes from ``fail_next_backup``'s ``status`` (shown once the
    backup has failed, not while it runs) or from a seeded backup's ``status`` (a seeded
    backup that never ends shows its word throughout).
    """
    word = record.get("status_word")
    if word and (phase is Phase.FAILED or lifecycle.duration is None):
        return str(word)
    return None


# --- control payload checks ------------------------------------------------------------


def check_keys(payload: Mapping[str, Any], allowed: set[str]) -> None:
    """Reject unknown keys: a typo in a test's seed must not pass silently."""
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise core.BadRequest(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def number(payload: Mapping[str, Any], key: str, default: float | None) -> float:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise core.BadRequest(f"{key} must be a non-negative number")
    return float(value)


def text(payload: Mapping[str, Any], key: str, default: str | None) -> Any:
    value = payload.get(key, default)
    if value is not None and not isinstance(value, str):
        raise core.BadRequest(f"{key} must be a string")
    return value


def flag(payload: Mapping[str, Any], key: str, default: bool) -> bool:
    value = payload.get(key, default)
    if not isinstance(value, bool):
        raise core.BadRequest(f"{key} must be true or false")
    return value
