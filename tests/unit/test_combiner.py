"""Flat combining from an event loop (Combiner.submit_async): what coroutines hand in
while a batch is out goes to a thread together, each request hears its own outcome,
and a failed run, a caller that leaves or a thread caller at the same time lose
nobody's answer."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from shared.combining import Combiner


@dataclass
class Ask:
    value: int
    outcome: Any = None


class Doubler:
    """Runs batches in a worker thread, the first held until `release` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()
        self.combiner: Combiner[Ask] = Combiner(self.run)

    def run(self, batch: list[Ask]) -> None:
        self.threads.add(threading.current_thread().name)
        self.release.wait(5)
        self.batches.append([ask.value for ask in batch])
        for ask in batch:
            if ask.value < 0:
                ask.outcome = ValueError(f"{ask.value} is negative")
            else:
                ask.outcome = ask.value * 2


async def test_what_is_handed_in_while_a_batch_is_out_goes_in_the_next_batch_together() -> None:
    doubler = Doubler()
    doubler.release.clear()
    first = Ask(1)
    running = asyncio.create_task(doubler.combiner.submit_async(first))
    await asyncio.sleep(0.05)  # the first batch is out, held in its thread
    later = [Ask(n) for n in range(2, 12)]
    waiting = [asyncio.create_task(doubler.combiner.submit_async(ask)) for ask in later]
    await asyncio.sleep(0.05)
    doubler.release.set()
    await asyncio.gather(running, *waiting)

    assert doubler.batches == [[1], list(range(2, 12))]
    assert [ask.outcome for ask in [first, *later]] == [n * 2 for n in range(1, 12)]
    assert threading.main_thread().name not in doubler.threads  # the loop never waits on the run


async def test_a_request_refused_by_the_run_hears_its_own_error_and_the_others_their_results() -> None:
    doubler = Doubler()
    asks = [Ask(3), Ask(-1), Ask(4)]
    await asyncio.gather(*(doubler.combiner.submit_async(ask) for ask in asks))
    assert asks[0].outcome == 6 and asks[2].outcome == 8
    assert isinstance(asks[1].outcome, ValueError)


async def test_a_run_that_fails_as_a_whole_is_every_request_s_error() -> None:
    def broken(batch: list[Ask]) -> None:
        if batch[0].value == 1:
            batch[0].outcome = "answered before the failure"
        raise ConnectionError("lost the database")

    combiner: Combiner[Ask] = Combiner(broken)
    asks = [Ask(1), Ask(2), Ask(3)]
    await asyncio.gather(*(combiner.submit_async(ask) for ask in asks))
    assert asks[0].outcome == "answered before the failure"
    assert all(isinstance(ask.outcome, ConnectionError) for ask in asks[1:])
    again = Ask(4)
    await combiner.submit_async(again)  # the combiner still runs what comes next
    assert isinstance(again.outcome, ConnectionError)


async def test_a_caller_that_leaves_does_not_stop_the_others_answers() -> None:
    doubler = Doubler()
    doubler.release.clear()
    leaving, staying = Ask(1), Ask(2)
    left = asyncio.create_task(doubler.combiner.submit_async(leaving))
    stays = asyncio.create_task(doubler.combiner.submit_async(staying))
    await asyncio.sleep(0.05)
    left.cancel()  # a client that disconnected
    doubler.release.set()
    await stays
    assert staying.outcome == 4
    assert leaving.outcome == 2  # its request was run all the same: what it asked for was done


async def test_threads_and_coroutines_share_the_batches() -> None:
    doubler = Doubler()
    doubler.release.clear()
    from_loop = asyncio.create_task(doubler.combiner.submit_async(Ask(1)))
    await asyncio.sleep(0.05)
    from_threads = [Ask(n) for n in (10, 20)]
    threads = [threading.Thread(target=doubler.combiner.submit, args=(ask,)) for ask in from_threads]
    for thread in threads:
        thread.start()
    await asyncio.sleep(0.05)
    doubler.release.set()
    await from_loop
    await asyncio.to_thread(lambda: [thread.join(5) for thread in threads])
    assert [ask.outcome for ask in from_threads] == [20, 40]
    assert sorted(v for batch in doubler.batches for v in batch) == [1, 10, 20]
    assert len(doubler.batches) == 2  # the two threads' requests went out together
