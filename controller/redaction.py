"""Keeping secrets out of everything converge shows or writes.

Called by the HTTP client on every error message, by the CLI on its final error output,
and by the state store when it names its own URL. Why a last-resort text filter as well
as "never put it there": a server may echo a request body (with a password) in its error
message, and we render server messages verbatim.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

MASK = "***"
SENSITIVE_CHANGE = "(sensitive, changed)"

# Keys whose values are secrets wherever they appear (auth blocks, request bodies).
SECRET_KEYS = frozenset(
    {
        "password",
        "pwd",
        "clientsecret",
        "token",
        "localpassword",
        "vcdpassword",
        "authtoken",
        "session_token",
        "id_token",
        "x-vcav-auth",
        "authorization",
    }
)

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]*)@", re.I
)


def _normalised(key: str) -> str:
    return key.replace("-", "").replace("_", "").lower()


# Computed once: is_secret_key runs for every key of every payload a plan renders.
_NORMALISED_SECRET_KEYS = frozenset(_normalised(k) for k in SECRET_KEYS)


# Why a cache: the keys asked about are a payload's field names, a few dozen in an estate
# however many objects it has, and each is asked once per object rendered or planned.
@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    return _normalised(key) in _NORMALISED_SECRET_KEYS


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret (3+ characters) and any URL password masked."""
    given = secrets if type(secrets) is frozenset else frozenset(secrets)
    for secret in _longest_first(given):
        text = text.replace(secret, MASK)
    return mask_url(text)


# Why a cache: apply redacts a line per action with the same few secrets each time.
@functools.lru_cache(maxsize=64)
def _longest_first(secrets: frozenset[str]) -> tuple[str, ...]:
    """The secrets worth masking, longest first (so a secret inside another goes second)."""
    return tuple(sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True))


def mask_url(text: str) -> str:
    """``postgresql://u:pw@h/db`` → ``postgresql://u:***@h/db`` (anywhere in ``text``)."""
    # Why the test first: apply redacts every progress line, and the pattern (which needs
    # "://") costs ~30 µs to try at every position of a line that has none.
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
