"""The notifier's JetStream layout.

    EVENTS               (the relay's)  events.<type>     read by the durable consumer
                                                          `notifier-fanout`
    WEBHOOK_DELIVERIES   (work queue)   webhooks.<subscription id>
                                                          one durable consumer per
                                                          subscription, `webhook-<id>`

A delivery message's body is the event's CloudEvent JSON, byte for byte as on EVENTS
(it is what gets signed and sent); its `Nats-Msg-Id` is the delivery id, so queuing
the same delivery twice stores it once. One consumer per subscription is what keeps
receivers apart: a message waiting to be retried (`nak` with a delay) holds one of its
consumer's `max_ack_pending` slots, so a dead receiver fills only its own.
"""
from __future__ import annotations

import logging
from uuid import UUID

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shared.bus import ensure_stream

log = logging.getLogger(__name__)

DELIVERY_SUBJECTS = "webhooks.*"
DELIVERY_HEADER = "Ticketing-Delivery"
EVENT_HEADER = "Ticketing-Event"  # the event's id: the webhook-id
FANOUT_CONSUMER = "notifier-fanout"
# Long enough to cover a notifier restart between queuing a delivery and acking its event.
DUPLICATE_WINDOW_SECONDS = 600.0
# Messages counted as waiting arrive at once; this only bounds a race with another notifier.
FOLLOW_UP_WAIT_SECONDS = 0.1


async def fetch_ready(pull: JetStreamContext.PullSubscription, limit: int, wait: float) -> list[Msg]:
    """Up to `limit` messages: the first within `wait` (else nats.errors.TimeoutError), then
    only those already waiting. nats-py's `fetch(n)` holds a batch open until it is full
    or its timeout ends, which would make a lone message wait out the whole timeout."""
    first = await pull.fetch(1, timeout=wait)
    waiting = min(limit - 1, first[-1].metadata.num_pending)
    if waiting <= 0:
        return first
    try:
        return first + await pull.fetch(waiting, timeout=FOLLOW_UP_WAIT_SECONDS)
    except nats.errors.TimeoutError:
        return first  # another instance took them meanwhile


def delivery_subject(subscription_id: UUID) -> str:
    return f"webhooks.{subscription_id}"


def lane_consumer(subscription_id: UUID) -> str:
    return f"webhook-{subscription_id}"


def event_subjects(patterns: tuple[str, ...]) -> list[str]:
    """EVENTS subjects for normalized event-type patterns (which never overlap)."""
    return ["events.>"] if patterns == ("*",) else [f"events.{p}" for p in patterns]


async def ensure_delivery_stream(js: JetStreamContext, name: str) -> None:
    """Create the work queue of deliveries, or bring it to this configuration. Work-queue
    retention: a delivery leaves the stream once its outcome is settled and acked."""
    config = StreamConfig(
        name=name,
        subjects=[DELIVERY_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        description="Webhook deliveries to make, one subject per subscription.",
    )
    await ensure_stream(js, config)


def fanout_config() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=FANOUT_CONSUMER,
        filter_subject="events.>",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30,
        max_ack_pending=4096,
    )


def lane_config(subscription_id: UUID, *, ack_wait: float, max_pending: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=lane_consumer(subscription_id),
        filter_subject=delivery_subject(subscription_id),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=max_pending,
        max_deliver=-1,  # the retry schedule, not JetStream, decides when to give up
    )
