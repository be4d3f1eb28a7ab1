"""Durations as manifests and flags write them: ``90s``, ``15m``, ``26h``, ``7d`` (and ``10ms``).

Called by validating (manifest fields), the CLI (``--lock-timeout``, ``--latency``) and
rendering (ages in reasons). Pure.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse(text: str | int | float) -> float:
    """Seconds in ``text``; a bare number is seconds. Raises ValueError with a user-facing message."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text}")
        return float(text)
    if text.strip() == "0":
        return 0.0
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 26h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def is_valid(text: object) -> bool:
    try:
        parse(text)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True


def humanize(seconds: float) -> str:
    """A short, rounded-down rendering for reasons and reports: ``27h``, ``3d``, ``45m``, ``20s``."""
    seconds = max(0, int(seconds))
    if seconds >= 2 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"
