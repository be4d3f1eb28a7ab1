"""``apply_threads.Taker``: each chain to exactly one thread, the writer's handed back last."""

from __future__ import annotations

import threading

from controller.apply_threads import Taker, run_in_threads

WAIT = 5.0  # seconds: the longest any test here waits on a thread


def _drain(take: Taker) -> list[int]:
    taken: list[int] = []
    while (index := take()) is not None:
        taken.append(index)
    return taken


def test_without_a_writer_the_chains_go_in_order_and_nothing_waits():
    take = Taker([3, 1, 2])
    assert _drain(take) == [3, 1, 2]
    assert take.take_write() is None


def test_a_thread_out_of_chains_waits_for_the_writer_then_takes_what_it_left():
    take = Taker([0], writes=[1, 2, 3, 4])
    assert take() == 0
    assert take.take_write() == 1
    assert take.take_write() == 2
    taken: list[int] = []
    thread = threading.Thread(target=lambda: taken.extend(_drain(take)))
    thread.start()
    thread.join(0.05)
    assert thread.is_alive() and taken == []  # waiting: the writer may still hand back
    take.hand_back(2)
    take.writer_ended()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert taken == [2, 3, 4]  # handed back first, then the writes it never took


def test_stop_releases_a_thread_waiting_on_the_writer_and_hands_out_nothing():
    take = Taker([], writes=[1, 2])
    taken: list[int | None] = []
    thread = threading.Thread(target=lambda: taken.append(take()))
    thread.start()
    thread.join(0.05)
    take.stop()
    thread.join(WAIT)
    assert not thread.is_alive() and taken == [None]
    assert take.take_write() is None


def test_every_index_goes_to_exactly_one_of_many_threads():
    take = Taker(range(0, 1000, 2), writes=range(1, 1000, 2))
    taken: list[int] = []
    lock = threading.Lock()

    def work(take: Taker) -> None:
        while (index := take()) is not None:
            with lock:
                taken.append(index)

    def write(take: Taker) -> None:
        try:
            while (index := take.take_write()) is not None:
                if index % 3:  # some done at once, the rest handed back
                    with lock:
                        taken.append(index)
                else:
                    take.hand_back(index)
        finally:
            take.writer_ended()

    run_in_threads([(take, write, "era"), *[(take, work, "era") for _ in range(8)]])
    assert sorted(taken) == list(range(1000))
