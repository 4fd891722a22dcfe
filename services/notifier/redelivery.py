"""Redelivery requests, carried out: the API records a request on the subscription's
stream; the notifier finds it in the subscription list, queues the deliveries, and
records that it did (which takes the request off the list).

"One message" is a message from the subscription's delivery log, sent again under
the same `webhook-id`. "Everything since an instant" reads EVENTS from that instant
with the subscription's current event types and filters, so it also covers what was
never queued while the subscription was disabled. A request repeated after a crash
queues the same delivery ids again, which the queue absorbs.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.notifier.directory import Directory, wants
from services.notifier.failures import TRANSIENT
from services.notifier.matching import Matcher
from services.notifier.queue import DeliveryQueue, Incoming
from services.notifier.streams import event_subjects, fetch_ready
from shared.domain.errors import WebhookNotFound
from shared.domain.webhook import Status
from shared.projections.webhook_deliveries import DeliveryLog
from shared.projections.webhook_subscriptions import Subscription
from shared.webhooks import Webhooks

log = logging.getLogger(__name__)

BATCH = 256
SCAN_WAIT_SECONDS = 1.0
SCAN_IDLE_SECONDS = 60.0  # the server drops a scan's consumer this long after we vanish


class Redeliveries:
    def __init__(self, js: JetStreamContext, events_stream: str, directory: Directory, matcher: Matcher,
                 queue: DeliveryQueue, deliveries: DeliveryLog, webhooks: Webhooks) -> None:
        self._js = js
        self._stream = events_stream
        self._directory = directory
        self._matcher = matcher
        self._queue = queue
        self._log = deliveries
        self._webhooks = webhooks
        self._running: dict[str, asyncio.Task[None]] = {}
        self._done: set[str] = set()  # until the subscription list shows them done too
        self._closing = False

    def start_pending(self) -> None:
        for subscription in self._directory.subscriptions.values():
            if subscription.status == Status.DELETED:
                continue
            for request_id, request in subscription.redeliveries.items():
                if request_id not in self._running and request_id not in self._done:
                    self._running[request_id] = asyncio.create_task(self._carry_out(subscription, request_id, request))

    def check(self) -> None:
        """Forget finished requests; raise what ended one unexpectedly."""
        for request_id, task in list(self._running.items()):
            if task.done():
                del self._running[request_id]
                task.result()

    async def close(self) -> None:
        self._closing = True  # backs up the cancel, which nats-py's wait_for may swallow
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _carry_out(self, subscription: Subscription, request_id: str, request: dict[str, Any]) -> None:
        try:
            if request["event_id"]:
                queued = await self._one(subscription, request_id, request["event_id"])
            else:
                queued = await self._since(subscription, request_id, datetime.fromisoformat(request["since"]))
            if self._closing:
                return  # cut short: the request stays pending, to be carried out again
            await asyncio.to_thread(self._webhooks.complete_redelivery, subscription.id, request_id, enqueued=queued)
        except WebhookNotFound:
            pass  # deleted meanwhile: nothing to send it to
        except TRANSIENT as error:
            log.warning("redelivery %s interrupted (%r); it will be tried again", request_id, error)
            return
        self._done.add(request_id)
        log.info("redelivery %s for subscription %s done", request_id, subscription.id)

    async def _one(self, subscription: Subscription, request_id: str, event_id: str) -> int:
        logged = await asyncio.to_thread(self._log.latest, subscription.id, event_id)
        if logged is None:  # the API checks it; a log emptied since has nothing to send
            return 0
        stored = await self._js.get_msg(self._stream, logged.stream_seq)
        event = Incoming.parse(stored.data or b"", logged.stream_seq)
        await self._queue.put([(event.planned(subscription.id, request_id), event.body)])
        return 1

    async def _since(self, subscription: Subscription, request_id: str, since: datetime) -> int:
        queued = 0
        scan = self._scan(subscription.spec.event_types, max(since, subscription.created_at))
        async with aclosing(scan) as batches:
            async for batch in batches:
                wanted = [e for e in batch if wants(subscription, e.type, e.time)]
                chosen = [e for e in wanted if await self._matcher.select(e, [subscription])]
                await self._queue.put([(e.planned(subscription.id, request_id), e.body) for e in chosen])
                queued += len(chosen)
        return queued

    async def _scan(self, patterns: tuple[str, ...], since: datetime) -> AsyncIterator[list[Incoming]]:
        """EVENTS from `since` on, of these types, in batches, up to the end of the stream."""
        consumer = await self._js.add_consumer(self._stream, ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since, filter_subjects=event_subjects(patterns),
            ack_policy=AckPolicy.NONE, inactive_threshold=SCAN_IDLE_SECONDS, mem_storage=True,
        ))
        pull = await self._js.pull_subscribe_bind(consumer=consumer.name, stream=self._stream)
        try:
            while not self._closing:
                try:
                    messages = await fetch_ready(pull, BATCH, SCAN_WAIT_SECONDS)
                except nats.errors.TimeoutError:
                    return  # nothing from `since` on
                yield [Incoming.of(m) for m in messages]
                if messages[-1].metadata.num_pending == 0:
                    return
        finally:
            await pull.unsubscribe()
            await self._js.delete_consumer(self._stream, consumer.name)
