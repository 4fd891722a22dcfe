"""`python -m services.dispatch`: the dispatch API on TICKETING_DISPATCH_PORT and the
dispatch worker (a durable JetStream consumer), in one process, until SIGTERM or SIGINT.

Reads TICKETING_DATABASE_URL, TICKETING_NATS_URL (required), TICKETING_NATS_USER and
TICKETING_NATS_PASSWORD (if NATS requires them), TICKETING_ENGINEERS_FILE
and TICKETING_SPARE_UNITS_FILE (loaded at start; unchanged files record nothing).
Run as many as you like: they share the durable consumer, and every decision is
guarded by the streams it writes.
"""
from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn
from nats.aio.client import Client

from services.dispatch.wiring import Dispatch, dispatch
from services.dispatch.worker import DispatchWorker
from shared.bus import ensure_event_stream
from shared.process import exit_cleanly_on_signals, run_loop, with_nats
from shared.serving import server_options
from shared.settings import Settings

log = logging.getLogger("services.dispatch")


async def consume(parts: Dispatch, settings: Settings, stop: asyncio.Event) -> None:
    # While NATS is down the API serves meanwhile.
    async def work(nc: Client) -> None:
        js = nc.jetstream()
        await ensure_event_stream(js, settings.stream_name)
        worker = DispatchWorker(parts.dispatcher, parts.spares, js, stream=settings.stream_name,
                                durable=settings.dispatch_consumer, overdue_every=settings.overdue_check_seconds)
        await worker.run(stop)

    await with_nats(settings, stop, work)


async def serve(parts: Dispatch, settings: Settings) -> None:
    server = uvicorn.Server(uvicorn.Config(parts.app, **server_options(settings, settings.dispatch_port)))
    stop = asyncio.Event()
    worker = asyncio.create_task(consume(parts, settings, stop))
    # A worker that dies takes the API with it, so the process exits and is seen to.
    worker.add_done_callback(lambda _: setattr(server, "should_exit", True))
    try:
        await server.serve()
    finally:
        stop.set()
        await worker


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dispatch %(levelname)s %(name)s: %(message)s")
    exit_cleanly_on_signals()
    settings = Settings()
    if not settings.nats_url:
        sys.exit("dispatch: TICKETING_NATS_URL is not set; the dispatch worker consumes ticket events from NATS")
    parts = dispatch(settings)
    log.info("dispatch API on %s:%d", settings.http_host, settings.dispatch_port)
    try:
        run_loop(serve(parts, settings))
    finally:
        parts.close()
        log.info("dispatch stopped")


if __name__ == "__main__":
    main()
