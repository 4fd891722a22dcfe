"""The fan-out: every event on EVENTS becomes one queued delivery per subscription
that wants it, and the event is acknowledged only once those deliveries are queued."""
from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.notifier.directory import Directory
from services.notifier.failures import BACKOFF_SECONDS, TRANSIENT
from services.notifier.matching import Matcher
from services.notifier.queue import DeliveryQueue, Incoming
from services.notifier.streams import FANOUT_CONSUMER, fanout_config, fetch_ready

log = logging.getLogger(__name__)

BATCH = 256
FETCH_WAIT_SECONDS = 1.0


class FanOut:
    def __init__(
        self, js: JetStreamContext, events_stream: str, directory: Directory, matcher: Matcher, queue: DeliveryQueue
    ) -> None:
        self._js = js
        self._stream = events_stream
        self._directory = directory
        self._matcher = matcher
        self._queue = queue

    async def run(self, closing: asyncio.Event) -> None:
        """Until `closing` is set (a cancel alone may be swallowed by nats-py's wait_for on Python 3.11)."""
        while not closing.is_set():
            try:
                await self._js.add_consumer(self._stream, fanout_config())
                subscription = await self._js.pull_subscribe_bind(FANOUT_CONSUMER, self._stream)
                try:
                    await self._follow(subscription, closing)
                finally:
                    await subscription.unsubscribe()
            except TRANSIENT as error:
                # Unacknowledged events come back after the consumer's ack wait.
                log.warning("fan-out interrupted (%r); resuming in %.0fs", error, BACKOFF_SECONDS)
                await asyncio.sleep(BACKOFF_SECONDS)

    async def _follow(self, subscription: JetStreamContext.PullSubscription, closing: asyncio.Event) -> None:
        while not closing.is_set():
            try:
                messages = await fetch_ready(subscription, BATCH, FETCH_WAIT_SECONDS)
            except nats.errors.TimeoutError:
                continue
            await self.handle(messages)

    async def handle(self, messages: list[Msg]) -> None:
        if not messages:  # a fetch can end on a status message alone
            return
        events = [Incoming.of(m) for m in messages]
        await self._directory.reach(max(e.position for e in events))
        deliveries = []
        for event in events:
            candidates = self._directory.fanning_out(event.type, event.time)
            for subscription in await self._matcher.select(event, candidates):
                deliveries.append((event.planned(subscription.id), event.body))
        await self._queue.put(deliveries)
        for message in messages:
            await message.ack()
