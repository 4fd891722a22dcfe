"""Delivery lanes: one per active subscription, so a slow or dead receiver only ever
delays its own deliveries.

A lane pulls from its subscription's own durable consumer, at most `concurrency`
messages at a time, each handed to the courier as its own task. A paused or
disabled subscription's lane stops pulling (its queue waits in JetStream, retries
included); a deleted one's consumer and queue are removed.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import partial
from uuid import UUID

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.notifier.courier import Courier
from services.notifier.failures import BACKOFF_SECONDS, TRANSIENT
from services.notifier.streams import delivery_subject, fetch_ready, lane_config, lane_consumer
from shared.clock import Clock
from shared.domain.webhook import Status
from shared.projections.webhook_deliveries import DeliveryLog
from shared.projections.webhook_subscriptions import Subscription

log = logging.getLogger(__name__)

FETCH_WAIT_SECONDS = 5.0  # a long poll: an idle lane costs one request per this
ACK_WAIT_MARGIN_SECONDS = 5.0  # beyond the request timeout, for recording the outcome


class Lane:
    def __init__(self, subscription_id: UUID, js: JetStreamContext, stream: str, courier: Courier, *,
                 concurrency: int, timeout: float, max_pending: int) -> None:
        self.subscription_id = subscription_id
        self._js = js
        self._stream = stream
        self._courier = courier
        self._concurrency = concurrency
        self._config = lane_config(subscription_id, ack_wait=timeout + ACK_WAIT_MARGIN_SECONDS, max_pending=max_pending)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.task = asyncio.create_task(self._run(), name=f"lane {subscription_id}")

    def stop(self) -> None:
        """Stop pulling (`task` ends soon after); deliveries already out finish on their own.
        The flag backs up the cancel: nats-py waits with asyncio.wait_for, which on
        Python 3.11 can swallow a cancellation."""
        self._stopping = True
        self.task.cancel()

    @property
    def busy(self) -> bool:
        return any(not task.done() for task in self._in_flight)

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for deliveries out, then abandon the rest (unacknowledged,
        JetStream hands them over again)."""
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace)
        for task in self._in_flight:
            task.cancel()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._js.add_consumer(self._stream, self._config)
                pull = await self._js.pull_subscribe_bind(lane_consumer(self.subscription_id), self._stream)
                try:
                    await self._pull(pull)
                finally:
                    await pull.unsubscribe()
            except TRANSIENT as error:
                log.warning("lane %s interrupted (%r); resuming in %.0fs", self.subscription_id, error, BACKOFF_SECONDS)
                await asyncio.sleep(BACKOFF_SECONDS)

    async def _pull(self, pull: JetStreamContext.PullSubscription) -> None:
        while not self._stopping:
            self._reap()
            if len(self._in_flight) >= self._concurrency:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await fetch_ready(pull, self._concurrency - len(self._in_flight), FETCH_WAIT_SECONDS)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                self._in_flight.add(asyncio.create_task(self._courier.handle(self.subscription_id, message)))

    def _reap(self) -> None:
        """Forget finished deliveries; one that failed unexpectedly (a bug) ends the lane, and
        with it the notifier, rather than failing quietly forever."""
        for task in [t for t in self._in_flight if t.done()]:
            self._in_flight.discard(task)
            task.result()


class Lanes:
    def __init__(self, js: JetStreamContext, stream: str, courier: Courier, deliveries: DeliveryLog, clock: Clock, *,
                 concurrency: int, timeout: float, max_pending: int) -> None:
        self._js = js
        self._stream = stream
        self._log = deliveries
        self._clock = clock
        self._new_lane = partial(Lane, js=js, stream=stream, courier=courier, concurrency=concurrency,
                                 timeout=timeout, max_pending=max_pending)
        self._timeout = timeout
        self._lanes: dict[UUID, Lane] = {}
        self._stopped: set[Lane] = set()  # winding down, or with deliveries still out
        self._tidied: set[UUID] = set()

    async def reconcile(self, subscriptions: Mapping[UUID, Subscription]) -> None:
        """A lane for each active subscription and none for the rest; a deleted one's queue removed."""
        active = {sid for sid, s in subscriptions.items() if s.status == Status.ACTIVE}
        for sid in active - self._lanes.keys():
            self._lanes[sid] = self._new_lane(sid)
        for sid in self._lanes.keys() - active:
            lane = self._lanes.pop(sid)
            lane.stop()
            self._stopped.add(lane)
        for sid, subscription in subscriptions.items():
            if subscription.status == Status.DELETED and sid not in self._tidied:
                await self._tidy(sid)
                self._tidied.add(sid)

    def check(self) -> None:
        """Raise what ended a lane unexpectedly; forget lanes that have wound down."""
        for lane in self._lanes.values():
            if lane.task.done():
                lane.task.result()
        self._stopped = {lane for lane in self._stopped if not lane.task.done() or lane.busy}

    async def close(self) -> None:
        lanes = [*self._lanes.values(), *self._stopped]
        self._lanes.clear()
        self._stopped.clear()
        for lane in lanes:
            lane.stop()
        await asyncio.gather(*(lane.task for lane in lanes), return_exceptions=True)
        await asyncio.gather(*(lane.drain(self._timeout) for lane in lanes))

    async def _tidy(self, subscription_id: UUID) -> None:
        try:
            await self._js.delete_consumer(self._stream, lane_consumer(subscription_id))
        except NotFoundError:
            pass  # never had one, or another notifier removed it first
        await self._js.purge_stream(self._stream, subject=delivery_subject(subscription_id))
        await asyncio.to_thread(self._log.cancel_pending, subscription_id, self._clock.now())
