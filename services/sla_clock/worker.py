"""The SLA clock worker: keeps one JetStream timer per open ticket and records what
falls due when it fires.

Two durable pull consumers, shared by every instance (each message goes to one):

    EVENTS      filtered to events.ticket.>   a ticket changed: record anything
                                              already due, then re-arm its timer
    SLA_TIMERS  filtered to sla.due.>         a timer fired: wait out the lead
                                              (see timers.py), record what is due,
                                              then re-arm (always: a timer that fired
                                              a hair early recorded nothing)

`events.sla.*` is not consumed: the SLA commitment is saved together with the ticket
event that caused it (opened, severity changed), and warnings and breaches are
recorded here, by an instance that re-arms right after. For the same reason ticket
events recorded here (escalations) are acked unread.

A message is acked only once its effect is recorded and the timer publish is
acknowledged; a store or NATS failure naks it with a delay. Several instances may
run at once: recording is idempotent, and `_settle` makes sure that the last timer
published for a ticket was computed from its latest version (see there).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from uuid import UUID, uuid4

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.sla_clock.alarms import ACTOR, AlarmConflict, SlaAlarms
from services.sla_clock.timers import DUE_SUBJECTS, LEAD_SECONDS, Due, Timers
from shared.bus import TRANSIENT_ERRORS
from shared.clock import Clock
from shared.domain.errors import TicketNotFound

log = logging.getLogger(__name__)

TICKET_EVENTS = "events.ticket.>"
EVENTS_CONSUMER = "sla_clock"
DUE_CONSUMER = "sla_clock_due"
# How soon a message in the hands of an instance that died goes to another one. It
# must exceed a hold plus the wait for a working slot plus a settle; a settle that
# outlasts it is merely repeated.
ACK_WAIT_SECONDS = 10.0
# Messages an instance holds unanswered per consumer: timers waiting out their lead
# cost nothing but memory, so many may wait at once; the wait for a working slot
# stays well inside the ack wait at a few hundred settles a second.
MAX_OUTSTANDING = 1024
# Settles running at once per instance: each is a few store reads and writes in a
# thread, so more than the thread pool would only queue there.
MAX_WORKING = 16
FETCH_SECONDS = 1.0  # also how long a stop may take to be noticed
FETCH_BATCH = 256
RETRY_DELAY_SECONDS = 1.0
# A message held longer than this is settled anyway (records nothing yet, re-arms):
# it only happens when the server's clock runs well ahead of ours.
MAX_HOLD_SECONDS = 2 * LEAD_SECONDS
_SETTLE_ATTEMPTS = 10

# Failures worth retrying: NATS or the database unreachable, slow, or refusing.
RETRIED = (*TRANSIENT_ERRORS, AlarmConflict)


class SlaClockWorker:
    def __init__(
        self, alarms: SlaAlarms, timers: Timers, js: JetStreamContext, events_stream: str, clock: Clock
    ) -> None:
        self.alarms = alarms
        self.timers = timers
        self.js = js
        self.events_stream = events_stream
        self.clock = clock
        self._working = asyncio.Semaphore(MAX_WORKING)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume both streams until `stop` is set."""
        # A settle mostly waits on the database (its commit), so every working slot gets
        # a thread of its own: asyncio's default pool has a handful on a small machine.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(MAX_WORKING, thread_name_prefix="settle"))
        events = await self._subscribe(self.events_stream, EVENTS_CONSUMER, TICKET_EVENTS)
        due = await self._subscribe(self.timers.stream, DUE_CONSUMER, DUE_SUBJECTS)
        log.info("keeping SLA time for stream %s with timers in %s", self.events_stream, self.timers.stream)
        await asyncio.gather(_consume(events, self._on_event, stop), _consume(due, self._on_due, stop))

    async def _subscribe(self, stream: str, durable: str, subject: str) -> JetStreamContext.PullSubscription:
        # Creating a consumer that exists with this configuration changes nothing, so
        # every instance may do it at start.
        await self.js.add_consumer(stream, ConsumerConfig(
            name=durable, durable_name=durable, filter_subject=subject, deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_SECONDS, max_ack_pending=MAX_OUTSTANDING,
        ))
        return await self.js.pull_subscribe_bind(durable=durable, stream=stream)

    async def _on_event(self, msg: Msg) -> None:
        envelope = json.loads(msg.data)
        if not isinstance(envelope, dict) or "subject" not in envelope:
            raise ValueError(f"{msg.subject}: not a ticket event")
        if (envelope.get("actorkind"), envelope.get("actorid")) == (ACTOR["kind"], ACTOR["id"]):
            # Ours (an escalation a breach called for): the settle that recorded it armed
            # the ticket from that very version, or else its timer is still unacked and
            # comes back to do it.
            return
        async with self._working:
            await self._settle(UUID(envelope["subject"]), envelope.get("correlationid"))

    async def _on_due(self, msg: Msg) -> None:
        due = Due.from_message(msg)
        early = (due.at - self.clock.now()).total_seconds()
        if early > 0:  # held without a working slot: a thousand timers may wait at once
            await asyncio.sleep(min(early, MAX_HOLD_SECONDS))
        async with self._working:
            await self._settle(due.ticket_id, due.correlation_id)

    async def _settle(self, ticket_id: UUID, correlation_id: str | None) -> None:
        """Record what is due, then leave the ticket one timer for what comes next.

        Two instances may handle the same ticket at once, and the slower one may
        publish a timer computed from an older version after the faster one. So the
        ticket's version is read before its next instant and again after the timer
        is published; if it moved, we go round again. The last timer published is
        then always one whose version was still the latest after it was published.
        """
        for _ in range(_SETTLE_ATTEMPTS):
            version, at = await asyncio.to_thread(self._fire_and_plan, ticket_id, correlation_id or str(uuid4()))
            if at is None:
                await self.timers.disarm(ticket_id)
            else:
                await self.timers.arm(ticket_id, at, correlation_id)
            if await asyncio.to_thread(self.alarms.version, ticket_id) == version:
                return
        raise AlarmConflict(f"ticket {ticket_id} kept changing while its timer was set")

    def _fire_and_plan(self, ticket_id: UUID, correlation_id: str) -> tuple[int, datetime | None]:
        """(In a thread.) Record what is due; return the version and next instant to arm for."""
        settled = self.alarms.settle(ticket_id, correlation_id)
        if settled.recorded:
            log.info("ticket %s: recorded %s", ticket_id, ", ".join(settled.recorded))
        return settled.version, settled.next_at


async def _consume(sub: JetStreamContext.PullSubscription, handle: Callable[[Msg], Awaitable[None]], stop: asyncio.Event) -> None:
    """Handle messages concurrently (a held timer must not delay the next one), at
    most MAX_OUTSTANDING at a time, until `stop` is set. An unexpected error in a
    handler is a bug: it ends the worker, as it ends the relay."""
    in_flight: set[asyncio.Task[None]] = set()
    async with asyncio.TaskGroup() as handlers:
        while not stop.is_set():
            if len(in_flight) >= MAX_OUTSTANDING:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await sub.fetch(min(FETCH_BATCH, MAX_OUTSTANDING - len(in_flight)), timeout=FETCH_SECONDS)
            except TimeoutError:
                continue  # nothing to do for now
            except RETRIED as error:
                log.warning("fetch failed (%r); retrying in %.1fs", error, RETRY_DELAY_SECONDS)
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            for msg in messages:
                task = handlers.create_task(_process(msg, handle))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        # Stopping: hand unfinished messages (e.g. held timers) back at once, so
        # another instance takes them now rather than after the ack wait.
        for task in list(in_flight):
            task.cancel()


async def _process(msg: Msg, handle: Callable[[Msg], Awaitable[None]]) -> None:
    try:
        await handle(msg)
    except asyncio.CancelledError:
        await _reply(msg, msg.nak())
        raise
    except TicketNotFound as error:
        log.warning("%s: %s; nothing to keep time for", msg.subject, error)
        await _reply(msg, msg.ack())
    except ValueError as error:
        log.error("dropping a message that is not ours: %s", error)
        await _reply(msg, msg.term())
    except RETRIED as error:
        log.warning("%s: %r; retrying in %.1fs", msg.subject, error, RETRY_DELAY_SECONDS)
        await _reply(msg, msg.nak(delay=RETRY_DELAY_SECONDS))
    else:
        await _reply(msg, msg.ack())


async def _reply(msg: Msg, answer: Awaitable[None]) -> None:
    """Ack, nak or term; if that fails the message comes back after the ack wait,
    which is harmless: handling is idempotent."""
    try:
        await answer
    except RETRIED as error:
        log.warning("%s: could not answer JetStream (%r)", msg.subject, error)
