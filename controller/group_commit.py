"""Inventory records from many apply threads, committed by one thread, several at a time.

Used by ``applying``. Why: each created roleapp must be in the state before the run reports
it, and one transaction per create cost ~0.25 ms of CPU in a 16-thread apply (the commit's
own ~75 µs, plus the GIL and file-lock hand-overs its syscalls cause between threads) —
a quarter of the client's whole cost of 1,000 creates. Here a worker hands its entry over
and goes on to the next object; one writer thread commits whatever has gathered in one
transaction, then calls each entry's ``then`` (which reports it). So:

1. nothing is reported before it is committed, as before;
2. a failed batch is retried entry by entry, so only an entry that fails on its own is
   reported failed, with the store's error;
3. ``close`` returns once everything handed over is committed and reported, and raises the
   first error a ``then`` raised (a progress line that cannot be written), after all ran.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from controller.state.store import InventoryEntry

GATHER_SECONDS = 0.002  # how long the writer lets entries gather before a commit

# Called once the entry is committed (None) or could not be (the store's error).
Then = Callable[[Exception | None], None]


class GroupCommit:
    def __init__(self, write: Callable[[Sequence[InventoryEntry]], None]) -> None:
        self._write = write
        self._changed = threading.Condition(threading.Lock())
        self._pending: list[tuple[InventoryEntry, Then]] = []
        self._closing = False
        self._error: BaseException | None = None  # the first error a ``then`` raised
        self._thread = threading.Thread(target=self._run, name="group commit", daemon=True)
        self._thread.start()

    def submit(self, entry: InventoryEntry, then: Then) -> None:
        """Commit ``entry`` soon, then call ``then`` on the writer thread."""
        with self._changed:
            if not self._closing:
                self._pending.append((entry, then))
                self._changed.notify()
                return
        # Closed already: an interrupted apply (Ctrl-C) whose workers are still finishing
        # their objects. Their records must not be dropped, so commit here, in the caller.
        for outcome, then_ in self._commit([(entry, then)]):
            then_(outcome)

    def close(self) -> None:
        """Commit and report everything submitted; re-raise the first error of a ``then``."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                closing = self._closing
            if not closing:
                # Let a few more gather: nobody waits on the commit but the report, and a
                # thousand creates then take ~150 transactions instead of ~450.
                time.sleep(GATHER_SECONDS)
            with self._changed:
                batch, self._pending = self._pending, []
            if not batch:
                return  # closing, and nothing left
            for outcome, then in self._commit(batch):
                try:
                    then(outcome)
                except BaseException as exc:  # re-raised by close(), once all are reported
                    if self._error is None:
                        self._error = exc

    def _commit(
        self, batch: list[tuple[InventoryEntry, Then]]
    ) -> list[tuple[Exception | None, Then]]:
        try:
            self._write([entry for entry, _ in batch])
        except Exception as exc:  # the store's error (or a bug): for the reports
            if len(batch) == 1:
                return [(exc, batch[0][1])]
            # Which one? Each alone: only an entry that fails by itself is reported failed.
            return [outcome for item in batch for outcome in self._commit([item])]
        return [(None, then) for _, then in batch]
