"""`python -m services.notifier`: deliver webhooks until SIGTERM or SIGINT.

Reads TICKETING_DATABASE_URL (default: SQLite under TICKETING_DATA_DIR),
TICKETING_NATS_URL (required), TICKETING_STREAM_NAME, TICKETING_SECRET_KEY and the
TICKETING_WEBHOOK_* settings. Run as many as you like: they share the work.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from services.notifier.worker import Notifier
from shared.bus import connect, unless_stopped
from shared.read_db import read_engine
from shared.settings import Settings
from shared.store import open_store

log = logging.getLogger("services.notifier")


async def serve(settings: Settings, nats_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    database_url = settings.resolved_database_url()
    store = open_store(database_url)
    engine = read_engine(database_url)
    try:
        # The client retries forever while NATS is down; a signal must still stop us.
        nc = await unless_stopped(stop, connect(nats_url))
        if nc is None:
            return
        try:
            await Notifier(settings, store, engine, nc).run(stop)
        finally:
            await nc.close()
    finally:
        engine.dispose()
        store.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    settings = Settings()
    if not settings.nats_url:
        sys.exit("notifier: TICKETING_NATS_URL is not set; the notifier reads events from NATS JetStream")
    asyncio.run(serve(settings, settings.nats_url))
    log.info("notifier stopped")


if __name__ == "__main__":
    main()
