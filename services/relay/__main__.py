"""`python -m services.relay`: relay recorded events to NATS until SIGTERM or SIGINT.

Reads TICKETING_DATABASE_URL (default: SQLite under TICKETING_DATA_DIR),
TICKETING_NATS_URL (required), TICKETING_NATS_USER and TICKETING_NATS_PASSWORD (if
NATS requires them) and TICKETING_STREAM_NAME. Run as many as you like: one holds the
lock and publishes, the others wait to take over.
"""
from __future__ import annotations

import asyncio
from contextlib import closing
from functools import partial

from nats.aio.client import Client

from services.relay.worker import Relay
from shared.bus import ensure_event_stream
from shared.process import run_worker
from shared.settings import Settings
from shared.store import open_store


async def relay(settings: Settings, nc: Client, stop: asyncio.Event) -> None:
    with closing(open_store(settings.resolved_database_url())) as store:
        js = nc.jetstream()
        await ensure_event_stream(js, settings.stream_name)
        await Relay(store, js, settings.stream_name).run(stop)


def main() -> None:
    settings = Settings()
    run_worker("relay", settings, partial(relay, settings), needs_nats_for="the relay needs a NATS server with JetStream to publish to")


if __name__ == "__main__":
    main()
