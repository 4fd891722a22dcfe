"""`python -m services.sla_clock`: keep SLA time until SIGTERM or SIGINT.

Reads TICKETING_DATABASE_URL (default: SQLite under TICKETING_DATA_DIR),
TICKETING_NATS_URL (required), TICKETING_NATS_USER and TICKETING_NATS_PASSWORD (if
NATS requires them), TICKETING_POLICY_FILE, TICKETING_STREAM_NAME (the event stream to
follow) and TICKETING_SLA_TIMER_STREAM (where deadlines are kept).
Run as many as you like: they share the consumers and the timers.
"""
from __future__ import annotations

import asyncio
from contextlib import closing
from functools import partial

from nats.aio.client import Client
from pydantic import Field

from services.sla_clock.alarms import SlaAlarms
from services.sla_clock.timers import Timers, ensure_timer_stream
from services.sla_clock.worker import SlaClockWorker
from shared.bus import ensure_event_stream
from shared.clock import SystemClock
from shared.process import run_worker
from shared.settings import Settings
from shared.sla.policy import Policy, load_policy
from shared.store import open_store


class SlaClockSettings(Settings):
    sla_timer_stream: str = Field("SLA_TIMERS", description="The JetStream stream holding SLA deadlines.")


async def keep_time(settings: SlaClockSettings, policy: Policy, nc: Client, stop: asyncio.Event) -> None:
    with closing(open_store(settings.resolved_database_url())) as store:
        js = nc.jetstream()
        await ensure_event_stream(js, settings.stream_name)
        await ensure_timer_stream(js, settings.sla_timer_stream)
        clock = SystemClock()
        worker = SlaClockWorker(
            SlaAlarms(store, policy, clock), Timers(js, settings.sla_timer_stream), js, settings.stream_name, clock
        )
        await worker.run(stop)


def main() -> None:
    settings = SlaClockSettings()
    policy = load_policy(settings.policy_file)  # a wrong policy stops us here, naming the key
    run_worker("sla_clock", settings, partial(keep_time, settings, policy), needs_nats_for="deadlines are kept in NATS JetStream")


if __name__ == "__main__":
    main()
