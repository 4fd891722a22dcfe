"""The dispatch worker: a durable JetStream consumer of ticket events.

Every dispatch instance pulls from the same durable consumer, so each message goes
to one of them; within an instance a ticket's messages are handled one at a time, in
stream order, and up to CONCURRENT tickets at once (a decision mostly waits on the
database; two decisions wanting one engineer are kept apart by the engineer's stream,
as between instances). A message is acknowledged only after its reaction is recorded in the store
(or found already recorded); a failure leaves it unacknowledged, to be delivered
again after a short delay. Reactions are idempotent (see shared/dispatch_desk.py),
so a redelivery, a duplicate or a second instance's attempt records nothing twice.

The worker also raises overdue spare-unit loans every `overdue_every` seconds.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from uuid import UUID

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.dispatch_desk import Dispatcher
from shared.dispatch_spares import SpareLogistics
from shared.domain.errors import TicketNotFound

log = logging.getLogger(__name__)

TICKET_EVENTS = "events.ticket.>"
FETCH_BATCH = 64
FETCH_WAIT_SECONDS = 0.5
ACK_WAIT_SECONDS = 30.0
REDELIVERY_DELAY_SECONDS = 1.0
CONCURRENT = 4
RECONNECT_WAIT_SECONDS = 0.5

# NATS unreachable for a moment: wait and pull again (the client reconnects by itself).
_TRANSIENT = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
)


class DispatchWorker:
    def __init__(
        self, dispatcher: Dispatcher, spares: SpareLogistics, js: JetStreamContext, *,
        stream: str, durable: str, overdue_every: float,
    ) -> None:
        self.dispatcher = dispatcher
        self.spares = spares
        self.js = js
        self.stream = stream
        self.durable = durable
        self.overdue_every = overdue_every
        self._working = asyncio.Semaphore(CONCURRENT)

    async def run(self, stop: asyncio.Event) -> None:
        subscription = await self.js.pull_subscribe(
            TICKET_EVENTS, durable=self.durable, stream=self.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_SECONDS, deliver_policy=DeliverPolicy.ALL,
                max_deliver=-1,
            ),
        )
        log.info("dispatch consuming %s from stream %s as %s", TICKET_EVENTS, self.stream, self.durable)
        overdue_due = time.monotonic()
        while not stop.is_set():
            try:
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT_SECONDS)
            except TimeoutError:  # nothing new (nats-py raises its own subclass, or asyncio's)
                messages = []
            except _TRANSIENT as error:
                log.warning("dispatch could not pull (%r); pulling again", error)
                await asyncio.sleep(RECONNECT_WAIT_SECONDS)
                continue
            await asyncio.gather(*(self._handle_in_order(queue) for queue in _by_ticket(messages)))
            if time.monotonic() >= overdue_due:
                if raised := await asyncio.to_thread(self.spares.flag_overdue):
                    log.info("raised %d overdue spare-unit loans", raised)
                overdue_due = time.monotonic() + self.overdue_every

    async def _handle_in_order(self, messages: list[Msg]) -> None:
        async with self._working:
            for message in messages:
                await self.handle(message)

    async def handle(self, message: Msg) -> None:
        event = json.loads(message.data)
        ticket_id, version, kind = UUID(event["subject"]), int(event["sequence"]), event["type"]
        correlation_id = event.get("correlationid") or f"dispatch:{ticket_id}:{version}"
        try:
            done = await asyncio.to_thread(self.dispatcher.react, ticket_id, version, kind, correlation_id)
        except TicketNotFound:
            done = "no such ticket in this store"  # nothing can ever be done about it
        except Exception:  # noqa: BLE001 - not acknowledged, so not lost: JetStream delivers it again
            log.exception("dispatch failed on %s v%d of %s; it will be delivered again", kind, version, ticket_id)
            await message.nak(delay=REDELIVERY_DELAY_SECONDS)
            return
        await message.ack()
        if done != "nothing to do":
            log.info("%s v%d of %s: %s", kind, version, ticket_id, done)


def _by_ticket(messages: list[Msg]) -> list[list[Msg]]:
    """The messages of one fetch, one queue per ticket, each in stream order."""
    queues: dict[str, list[Msg]] = {}
    for message in messages:
        try:
            ticket = json.loads(message.data)["subject"]
        except (ValueError, KeyError, TypeError):
            ticket = message.reply  # handled alone, where its fault is reported
        queues.setdefault(ticket, []).append(message)
    return list(queues.values())
