"""`python -m services.relay`: relay recorded events to NATS until SIGTERM or SIGINT.

Reads TICKETING_DATABASE_URL (default: SQLite under TICKETING_DATA_DIR),
TICKETING_NATS_URL (required) and TICKETING_STREAM_NAME. Run as many as you like:
one holds the lock and publishes, the others wait to take over.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from services.relay.worker import Relay
from shared.bus import connect, ensure_event_stream, unless_stopped
from shared.settings import Settings
from shared.store import open_store

log = logging.getLogger("services.relay")


async def serve(settings: Settings, nats_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = open_store(settings.resolved_database_url())
    try:
        # The client retries forever while NATS is down; a signal must still stop us.
        nc = await unless_stopped(stop, connect(nats_url))
        if nc is None:
            return
        try:
            js = nc.jetstream()
            await ensure_event_stream(js, settings.stream_name)
            await Relay(store, js, settings.stream_name).run(stop)
        finally:
            await nc.close()
    finally:
        store.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    settings = Settings()
    if not settings.nats_url:
        sys.exit("relay: TICKETING_NATS_URL is not set; the relay needs a NATS server with JetStream to publish to")
    asyncio.run(serve(settings, settings.nats_url))
    log.info("relay stopped")


if __name__ == "__main__":
    main()
