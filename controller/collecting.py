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
False and a pause only delays collections. What that means in the CLI's process (measured:
a few dozen cycles per run, function and type objects of lazy imports, the HTTP lanes'
queue conditions at exit): an object in a frozen cycle is never finalized, so its
``__del__`` never runs and an unclosed socket in it never warns. converge closes what it
opens explicitly (``Run.__exit__``: sessions, lanes, the store) and must keep doing so:
nothing may be left for a finalizer to release.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused(*, freeze: bool) -> Iterator[None]:
    """No cyclic collection inside; with ``freeze``, what is alive afterwards is frozen.

    Nested, or with the collector already off, a pause does nothing: the outer one (or
    whoever turned the collector off) decides, and freezes as it was asked to.
    """
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
