"""The scaffolding every NATS worker process shares: logging, the required NATS URL,
a stop on SIGTERM/SIGINT, a connection (with credentials, if set) that is always
closed, and word to the launcher once it is up."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop
from nats.aio.client import Client

from shared.bus import connect, unless_stopped
from shared.settings import Settings

Work = Callable[[Client, asyncio.Event], Awaitable[None]]


def ready_folder(data_dir: Path) -> Path:
    """Where each service started by deploy/run.py leaves a file named by its pid once up."""
    return data_dir / "ready"


def announce_ready(settings: Settings) -> None:
    """Tell the launcher this process is up. It says the product is ready only once
    every service has: on a busy machine a worker may take seconds to start, and a
    ticket opened meanwhile would have its first seconds-long deadline recorded late."""
    folder = ready_folder(settings.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()


async def with_nats(settings: Settings, stop: asyncio.Event, work: Callable[[Client], Awaitable[None]]) -> None:
    """`work(nc)` on a connection to TICKETING_NATS_URL (which the caller checked is set)
    as TICKETING_NATS_USER, if set; the connection is closed afterwards."""
    assert settings.nats_url, "checked at start"
    # The client retries forever while NATS is down or refuses us; a stop must still stop us.
    nc = await unless_stopped(stop, connect(settings.nats_url, user=settings.nats_user, password=settings.nats_password))
    if nc is None:
        return
    announce_ready(settings)  # durable consumers: whatever was published meanwhile is waiting
    try:
        await work(nc)
    finally:
        await nc.close()


def run_worker(name: str, settings: Settings, work: Work, *, needs_nats_for: str) -> None:
    """Run `work(nc, stop)` until it returns; `stop` is set by SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    if not settings.nats_url:
        sys.exit(f"{name}: TICKETING_NATS_URL is not set; {needs_nats_for}")

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await with_nats(settings, stop, lambda nc: work(nc, stop))

    run_loop(serve())
    logging.getLogger(f"services.{name}").info("%s stopped", name)


def exit_cleanly_on_signals() -> None:
    """For a process serving HTTP: uvicorn handles SIGTERM and SIGINT while it serves
    and raises them again when done; exit cleanly then, and on one during start-up."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run(main)`, tuned for a long-lived service.

    A worker spends much of its CPU in the event loop (a message fetched, held, acked,
    a thread hop per store call): uvloop's loop costs less per step. And what is loaded
    at start (modules, the policy, the calendars) lives as long as the process, so it
    is moved out of the collector's sight: the collections that a storm of decoded
    events sets off then scan only what the storm allocated."""
    gc.collect()
    gc.freeze()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
