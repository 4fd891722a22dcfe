"""Relay lag as the issue defines it: event committed → acknowledged by JetStream.

An event's own timestamp is the instant it was decided, which can be long before its
commit: dispatch decides a fetch's tickets one after another and saves them together,
so the first decision's events wait for the last one's. Their recorded → JetStream
figure is mostly the writer's time, not the relay's.

So while the load runs, a probe in a process of its own (no GIL shared with the load
client) comments on tickets at a steady rate, each comment decided and saved at once:
its timestamp is taken just before its save, and JetStream's stored instant minus that
timestamp is the lag from commit, over-counted by one save at most.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from shared.clock import SystemClock
from shared.desk import TicketDesk
from shared.store import open_store

RATE = 20.0  # comments per second: a sample for the p99, a small share of the load
TYPE = "ticket.commented"


async def probe(database_url: str, tickets: list[str], seconds: float) -> None:
    """Comment on `tickets` in turn, RATE a second, for `seconds`, from another process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.get_running_loop().run_in_executor(pool, _comment_steadily, database_url, tickets, seconds)


def _comment_steadily(database_url: str, tickets: list[str], seconds: float) -> None:
    store = open_store(database_url)
    desk = TicketDesk(store, SystemClock())
    began = time.perf_counter()
    for i in range(int(RATE * seconds)):
        delay = began + i / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        desk.act(tickets[i % len(tickets)], "comment", expected_version=None, actor={"kind": "service", "id": "bench"},
                 correlation_id=f"bench-probe-{i}", text="relay probe", public=False)
    store.close()
