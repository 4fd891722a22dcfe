"""The dispatch worker: a durable JetStream consumer of ticket events.

Every dispatch instance pulls from the same durable consumer, so each message goes
to one of them. Within an instance, the messages of one fetch are decided together
(Dispatcher.react_many: one read, one save for the lot), one message per ticket at a
time, so each ticket's messages are reacted to in stream order; two instances
wanting one engineer are kept apart by the engineer's stream. A message is
acknowledged only after its reaction is recorded in the store (or found already
recorded); a failure leaves it unacknowledged, to be delivered again after a short
delay. Reactions are idempotent (see shared/dispatch_desk.py), so a redelivery, a
duplicate or a second instance's attempt records nothing twice.

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

from shared.dispatch_desk import RELEASING, STAFFING, Dispatcher, Reaction
from shared.dispatch_spares import SpareLogistics
from shared.domain.errors import TicketNotFound

log = logging.getLogger(__name__)

# Only the events dispatch reacts to: each of a ticket's other events (its SLA
# commitment, comments, acknowledgement...) would cost a delivery, a decode and an ack
# for nothing to do, and hold up the next fetch by a round of its own.
REACTED_TO = tuple(f"events.{kind}" for kind in sorted(STAFFING | RELEASING))
FETCH_BATCH = 64
FETCH_WAIT_SECONDS = 0.5
ACK_WAIT_SECONDS = 30.0
REDELIVERY_DELAY_SECONDS = 1.0
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

    async def run(self, stop: asyncio.Event) -> None:
        # Creating the consumer as it stands changes nothing, so every instance does it
        # at start; one made by an earlier version with another filter takes this one,
        # keeping its place in the stream.
        await self.js.add_consumer(self.stream, ConsumerConfig(
            name=self.durable, durable_name=self.durable, filter_subjects=list(REACTED_TO),
            ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_SECONDS, deliver_policy=DeliverPolicy.ALL, max_deliver=-1,
        ))
        subscription = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        log.info("dispatch consuming %s from stream %s as %s", ", ".join(REACTED_TO), self.stream, self.durable)
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
            queues = await self._by_ticket(messages)
            while queues:  # the first message of each ticket, then the second of each...
                await self.handle([queue.pop(0) for queue in queues])
                queues = [queue for queue in queues if queue]
            if time.monotonic() >= overdue_due:
                if raised := await asyncio.to_thread(self.spares.flag_overdue):
                    log.info("raised %d overdue spare-unit loans", raised)
                overdue_due = time.monotonic() + self.overdue_every

    async def handle(self, batch: list[tuple[Msg, Reaction]]) -> None:
        """React to messages of different tickets together; ack each one whose reaction is
        recorded, nak the others for a later delivery."""
        reactions = [reaction for _, reaction in batch]
        try:
            outcomes = await asyncio.to_thread(self.dispatcher.react_many, reactions)
        except Exception as error:  # noqa: BLE001 - not acknowledged, so not lost: JetStream delivers them again
            outcomes = {reaction.ticket_id: error for reaction in reactions}
        await asyncio.gather(*(self._settle(message, reaction, outcomes[reaction.ticket_id]) for message, reaction in batch))

    async def _settle(self, message: Msg, reaction: Reaction, outcome: str | Exception) -> None:
        kind, version, ticket_id = reaction.event_type, reaction.version, reaction.ticket_id
        if isinstance(outcome, TicketNotFound):
            outcome = "no such ticket in this store"  # nothing can ever be done about it
        if isinstance(outcome, Exception):
            log.error("dispatch failed on %s v%d of %s; it will be delivered again", kind, version, ticket_id, exc_info=outcome)
            await message.nak(delay=REDELIVERY_DELAY_SECONDS)
            return
        await message.ack()
        if outcome != "nothing to do":
            # Each decision is an event in the ticket's history already; a line each at
            # INFO cost dispatch a sixth of its CPU during a storm (py-spy, 2026-12-07).
            log.debug("%s v%d of %s: %s", kind, version, ticket_id, outcome)

    @staticmethod
    async def _by_ticket(messages: list[Msg]) -> list[list[tuple[Msg, Reaction]]]:
        """The messages of one fetch with their reactions, one queue per ticket, each in
        stream order."""
        queues: dict[UUID, list[tuple[Msg, Reaction]]] = {}
        for message in messages:
            try:
                event = json.loads(message.data)
                ticket_id, version = UUID(event["subject"]), int(event["sequence"])
                correlation_id = event.get("correlationid") or f"dispatch:{ticket_id}:{version}"
                reaction = Reaction(ticket_id, version, event["type"], correlation_id)
            except (ValueError, KeyError, TypeError):
                # Not an event the relay published: delivering it again cannot help.
                log.error("dispatch dropped a message that is not a ticket event: %r", message.data[:200])
                await message.term()
                continue
            queues.setdefault(ticket_id, []).append((message, reaction))
        return list(queues.values())
