"""Queuing deliveries: the one way a delivery enters the work queue, for first
deliveries (the fan-out) and redeliveries alike.

Order matters for "never lost": the delivery is written to the log as pending, then
published (and JetStream's acknowledgement awaited), and only then may the caller
acknowledge whatever asked for it. A crash anywhere in between repeats the whole
step, which the log (insert-or-ignore) and JetStream (deduplication by delivery id)
absorb.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from nats.aio.client import Client
from nats.aio.msg import Msg

from services.notifier.streams import DELIVERY_HEADER, EVENT_HEADER, delivery_subject
from shared.bus import CONTENT_TYPE, AckedPublisher
from shared.clock import Clock
from shared.projections.webhook_deliveries import DeliveryLog, Planned, delivery_id

ACK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Incoming:
    """An event as read from the EVENTS stream: its CloudEvent body, kept byte for byte."""

    id: str
    type: str
    time: datetime
    subject: str  # the stream (e.g. ticket) id
    version: int
    position: int  # in the store's notification log
    stream_seq: int  # in EVENTS
    body: bytes

    @classmethod
    def of(cls, msg: Msg) -> Incoming:
        """From a message a consumer delivered."""
        return cls.parse(msg.data, msg.metadata.sequence.stream)

    @classmethod
    def parse(cls, body: bytes, stream_seq: int) -> Incoming:
        envelope = json.loads(body)
        return cls(
            id=envelope["id"], type=envelope["type"], time=datetime.fromisoformat(envelope["time"]),
            subject=envelope["subject"], version=envelope["sequence"], position=envelope["position"],
            stream_seq=stream_seq, body=body,
        )

    def planned(self, subscription_id: UUID, request_id: str | None = None) -> Planned:
        return Planned(
            id=delivery_id(self.id, subscription_id, request_id), subscription_id=subscription_id, event_id=self.id,
            event_type=self.type, event_time=self.time, stream_seq=self.stream_seq, request_id=request_id,
        )


class DeliveryQueue:
    def __init__(self, nc: Client, log: DeliveryLog, clock: Clock) -> None:
        self._publisher = AckedPublisher(nc)
        self._log = log
        self._clock = clock

    async def put(self, deliveries: list[tuple[Planned, bytes]]) -> None:
        """Log and publish these deliveries; returns once JetStream holds every one."""
        if not deliveries:
            return
        await asyncio.to_thread(self._log.enqueue, [planned for planned, _ in deliveries], self._clock.now())
        acks = []
        try:
            for planned, body in deliveries:
                headers = {"Nats-Msg-Id": str(planned.id), DELIVERY_HEADER: str(planned.id),
                           EVENT_HEADER: planned.event_id, "Content-Type": CONTENT_TYPE}
                acks.append(await self._publisher.publish(delivery_subject(planned.subscription_id), body, headers))
            for ack in acks:
                await asyncio.wait_for(ack, ACK_TIMEOUT_SECONDS)
        finally:
            _abandon(acks)

    async def close(self) -> None:
        await self._publisher.close()


def _abandon(acks: list[asyncio.Future]) -> None:
    """After a failure the caller repeats the whole step: free the acks still in flight
    and mark the failed ones seen."""
    for ack in acks:
        if not ack.done():
            ack.cancel()
        elif not ack.cancelled():
            ack.exception()
