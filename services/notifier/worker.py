"""The notifier, assembled: follow the subscription list (lanes and redeliveries follow
it), fan events out, deliver. Several notifiers may run at once: they share the
durable consumers, so each message goes to one of them."""
from __future__ import annotations

import asyncio
import logging
import random

from nats.aio.client import Client
from sqlalchemy import Engine

from services.notifier.courier import Courier
from services.notifier.directory import Directory
from services.notifier.failures import TRANSIENT
from services.notifier.fanout import FanOut
from services.notifier.lanes import Lanes
from services.notifier.matching import Matcher
from services.notifier.queue import DeliveryQueue
from services.notifier.redelivery import Redeliveries
from services.notifier.retry import RetryPolicy
from services.notifier.sender import Sender
from services.notifier.streams import ensure_delivery_stream
from shared.bus import ensure_event_stream
from shared.clock import Clock, SystemClock
from shared.projections.webhook_deliveries import DeliveryLog
from shared.projections.webhook_subscriptions import WebhookSubscriptionsProjection
from shared.settings import Settings
from shared.store import EventStore
from shared.webhooks import Webhooks

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 0.2  # how soon a new, paused or resumed subscription takes effect


class Notifier:
    def __init__(self, settings: Settings, store: EventStore, engine: Engine, nc: Client, *,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        clock = clock or SystemClock()
        self._settings = settings
        self._js = nc.jetstream()
        deliveries = DeliveryLog(engine)
        webhooks = Webhooks.configure(settings, store, engine, clock)
        self.directory = Directory(WebhookSubscriptionsProjection(store, engine))
        self._queue = DeliveryQueue(nc, deliveries, clock)
        matcher = Matcher(store)
        self._sender = Sender(webhooks.destinations, settings.webhook_timeout)
        policy = RetryPolicy(settings.webhook_retry_schedule, settings.webhook_retry_jitter)
        courier = Courier(self.directory, deliveries, webhooks, self._sender, webhooks.box, policy, clock, rng)
        self._lanes = Lanes(
            self._js, settings.webhook_stream_name, courier, deliveries, clock,
            concurrency=settings.webhook_concurrency, timeout=settings.webhook_timeout,
            max_pending=settings.webhook_max_pending,
        )
        self._fanout = FanOut(self._js, settings.stream_name, self.directory, matcher, self._queue)
        self._redeliveries = Redeliveries(
            self._js, settings.stream_name, self.directory, matcher, self._queue, deliveries, webhooks
        )
        self._reconciled = 0  # the directory generation the lanes match

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; deliveries out then get one request timeout to finish."""
        await ensure_event_stream(self._js, self._settings.stream_name)
        await ensure_delivery_stream(self._js, self._settings.webhook_stream_name)
        closing = asyncio.Event()
        fanout = asyncio.create_task(self._fanout.run(closing), name="fan-out")
        try:
            while not stop.is_set():
                await self._follow()
                if fanout.done():
                    fanout.result()
                try:
                    await asyncio.wait_for(stop.wait(), FOLLOW_SECONDS)
                except TimeoutError:
                    pass
        finally:
            closing.set()
            fanout.cancel()
            await asyncio.gather(fanout, return_exceptions=True)
            await self._redeliveries.close()
            await self._lanes.close()
            await self._queue.close()
            await self._sender.close()

    async def _follow(self) -> None:
        try:
            await self.directory.refresh()
            if self.directory.generation != self._reconciled:
                generation = self.directory.generation
                await self._lanes.reconcile(self.directory.subscriptions)
                self._reconciled = generation
        except TRANSIENT as error:
            log.warning("could not follow the subscription list (%r); trying again", error)
        self._redeliveries.start_pending()
        self._lanes.check()
        self._redeliveries.check()
