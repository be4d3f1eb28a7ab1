"""The threads an apply runs its chains in, and how they share a group's chains out.

Used by ``applying`` only. Why a module of its own: the hand-out rules (a writer sending
one connection's lone writes at once beside threads running its other chains, then the
writes it left) and the Ctrl-C wait are subtle enough to read and test apart from what
the chains do.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

Job = Callable[["Taker"], None]


class Taker:
    """Hands out one group's chains (by index), each to exactly one thread.

    Without a writer, threads take ``chains`` in order. With one (``writes`` given), the
    writer takes those (``take_write``) while the threads take ``chains``; a thread that
    has run out waits for the writer to end, then takes what it handed back
    (``hand_back``) and what it never took — so chains of several actions and the other
    connections' work never wait for the writes, and the writes it left are still made
    as soon as it ends.
    """

    def __init__(self, chains: Iterable[int], writes: Iterable[int] = ()) -> None:
        self._chains = iter(chains)
        self._handed_back: deque[int] = deque()
        self._lock = threading.Lock()
        self._stopped = False
        self._writes_left = deque(writes)  # taken by the writer, or after it by threads
        self._writer_ended = threading.Event()
        if not self._writes_left:
            self._writer_ended.set()  # no writer: nothing to wait for

    def __call__(self) -> int | None:
        """The next chain for a thread, or None when there is none (or stop was called)."""
        with self._lock:
            if self._stopped:
                return None
            index = next(self._chains, None)
            if index is not None:
                return index
        self._writer_ended.wait()
        with self._lock:
            if self._stopped:
                return None
            if self._handed_back:
                return self._handed_back.popleft()
            return self._writes_left.popleft() if self._writes_left else None

    def take_write(self) -> int | None:
        """The next lone write for the writer, or None."""
        with self._lock:
            if self._stopped or not self._writes_left:
                return None
            return self._writes_left.popleft()

    def hand_back(self, index: int) -> None:
        """A write the writer took and left: a thread makes it once the writer ends."""
        with self._lock:
            self._handed_back.append(index)

    def writer_ended(self) -> None:
        """Called once the writer is done (or has no writes): the threads take the rest."""
        self._writer_ended.set()

    def stop(self) -> None:
        """Hand out nothing more: the chains not begun stay undone.

        So do the writes handed back: their first attempt's outcome stays unknown to the
        state, and the next plan finds each by its id (created, or not) and goes on.
        """
        with self._lock:
            self._stopped = True
        self._writer_ended.set()  # a thread waiting on the writer gives up too


def run_in_threads(jobs: Sequence[tuple[Taker, Job, str]]) -> None:
    """Run each job in a thread of its own, named after its connection, and wait for all.

    On Ctrl-C (or a thread that could not start) every taker is stopped, so no other
    chain begins, and the ones under way finish (and are recorded) before this raises,
    because the caller then releases the state lock and closes the store; a second Ctrl-C
    stops this wait too. Threads are waited on by their own events: a join that Ctrl-C
    interrupted takes its thread as ended while it runs on (CPython 3.11, bpo-45274), so
    joining it again would not wait.
    """
    ended = [threading.Event() for _ in jobs]

    def run(job: Job, take: Taker, end: threading.Event) -> None:
        try:
            job(take)
        finally:
            end.set()

    threads = [
        threading.Thread(target=run, args=(job, take, end), name=f"apply {name}")
        for (take, job, name), end in zip(jobs, ended, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        for take, _, _ in jobs:
            take.stop()
        for thread, end in zip(threads, ended, strict=True):
            if thread.ident is not None:  # started
                end.wait()
                thread.join()  # its last instants, unless the interrupted join ended it
        raise
