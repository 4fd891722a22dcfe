"""`python -m services.sla_clock`: keep SLA time until SIGTERM or SIGINT.

Reads TICKETING_DATABASE_URL (default: SQLite under TICKETING_DATA_DIR),
TICKETING_NATS_URL (required), TICKETING_POLICY_FILE, TICKETING_STREAM_NAME (the
event stream to follow) and TICKETING_SLA_TIMER_STREAM (where deadlines are kept).
Run as many as you like: they share the consumers and the timers.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import Field

from services.sla_clock.alarms import SlaAlarms
from services.sla_clock.timers import Timers, ensure_timer_stream
from services.sla_clock.worker import SlaClockWorker
from shared.bus import connect, ensure_event_stream, unless_stopped
from shared.clock import SystemClock
from shared.settings import Settings
from shared.sla.policy import load_policy
from shared.store import open_store

log = logging.getLogger("services.sla_clock")


class SlaClockSettings(Settings):
    sla_timer_stream: str = Field("SLA_TIMERS", description="The JetStream stream holding SLA deadlines.")


async def serve(settings: SlaClockSettings, nats_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    policy = load_policy(settings.policy_file)  # a wrong policy stops us here, naming the key
    store = open_store(settings.resolved_database_url())
    try:
        # The client retries forever while NATS is down; a signal must still stop us.
        nc = await unless_stopped(stop, connect(nats_url))
        if nc is None:
            return
        try:
            js = nc.jetstream()
            await ensure_event_stream(js, settings.stream_name)
            await ensure_timer_stream(js, settings.sla_timer_stream)
            clock = SystemClock()
            worker = SlaClockWorker(
                SlaAlarms(store, policy, clock), Timers(js, settings.sla_timer_stream), js, settings.stream_name, clock
            )
            await worker.run(stop)
        finally:
            await nc.close()
    finally:
        store.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    settings = SlaClockSettings()
    if not settings.nats_url:
        sys.exit("sla_clock: TICKETING_NATS_URL is not set; deadlines are kept in NATS JetStream")
    asyncio.run(serve(settings, settings.nats_url))
    log.info("sla_clock stopped")


if __name__ == "__main__":
    main()
