"""When the cyclic garbage collector runs in a converge process.

A converge command is short and keeps nearly all it builds to the end (documents,
manifests, live objects, the plan), with almost no reference cycles. The collector's
default rhythm suits long-running programs: every collection rescans the survivors for
nothing. Three rules, measured on 10,000 manifests:

1. The CLI collects less often (``cli._collect_less_often``: every 50,000 net allocations).
2. Bursts that build what the command keeps (loading, reading live state, planning) run
   with the collector paused (:func:`paused`). In the CLI's own process what they built is
   then frozen, moved where no collection looks again; reference counting still frees it.
   Without that, the collections after the burst walk all of it, and again as it ages.
3. At the end of the CLI's process everything is frozen (:func:`settle`), so the
   collection the interpreter makes on its way out has nothing to walk.

Freezing is for a process that owns its heap only: a garbage cycle alive at that moment is
never collected, which a long-lived caller (a test session) would feel; there ``freeze`` is
False and a pause only delays collections.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused(*, freeze: bool) -> Iterator[None]:
    """No cyclic collection inside; with ``freeze``, what is alive afterwards is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if freeze:
                gc.freeze()
            gc.enable()


def settle() -> None:
    """Freeze everything before the interpreter's closing collection (CLI process only)."""
    gc.freeze()
