"""When to try a call again, and how long to wait first.

Used by ``controller.clients.http`` only. Kept apart from the transport so the
arithmetic (full-jitter backoff, Retry-After, the time budget) is testable without any
network: every input, including the random source and the clock, is a parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

# Answers that say "not now" without having done anything: safe to repeat for any method.
RETRY_ALWAYS = frozenset({429, 503})
# Gateways that may have passed the request on before failing: repeat only idempotent calls.
RETRY_IF_IDEMPOTENT = frozenset({502, 504})
# Methods that mean the same thing when repeated (RFC 9110 §9.2.2, plus Era's LOOKUP).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "LOOKUP"})


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # here: ~13 ms of start-up for a header that is rarely a date

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # unreadable: fall back to our own backoff rather than fail
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP dates are always GMT
    return max(0.0, (when - now).total_seconds())


@dataclasses.dataclass(slots=True, kw_only=True)
class RetryBudget:
    """The retries left to one call: a count and a deadline, whichever ends first."""

    max_attempts: int
    max_seconds: float
    backoff_base: float
    clock: Callable[[], float]
    random: Callable[[], float]
    attempts: int = 0
    started: float = dataclasses.field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def start_attempt(self) -> None:
        self.attempts += 1

    def forgive_attempt(self) -> None:
        """A repeat that is not a retry (after a re-login) does not use up an attempt."""
        self.attempts -= 1

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Seconds to sleep before the next attempt, or None when the budget is spent.

        Full jitter (AWS "Exponential Backoff and Jitter"): a uniform draw in
        [0, base·2^n] spreads clients that failed together. A server's Retry-After wins
        over our own guess, but never stretches the call past its time budget.
        """
        if self.attempts >= self.max_attempts:
            return None
        remaining = self.max_seconds - (self.clock() - self.started)
        if remaining <= 0:
            return None
        if retry_after is not None:
            return min(retry_after, remaining)
        ceiling = self.backoff_base * (2 ** (self.attempts - 1))
        return min(self.random() * ceiling, remaining)
