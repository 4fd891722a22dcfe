"""The SLA clock worker: keeps one JetStream timer per open ticket and records what
falls due when it fires.

Two durable pull consumers, shared by every instance (each message goes to one):

    EVENTS      filtered to the ticket        a ticket changed: record anything
                events but dispatch's         already due, then re-arm its timer
    SLA_TIMERS  filtered to sla.due.>         a timer fired: wait out the lead
                                              (see timers.py), record what is due,
                                              then re-arm (always: a timer that fired
                                              a hair early recorded nothing)

`events.sla.*` is not consumed: the SLA commitment is saved together with the ticket
event that caused it (opened, severity changed), and warnings and breaches are
recorded here, by an instance that re-arms right after. For the same reason ticket
events recorded here (escalations) are acked unread.

Handlers hand their ticket to a few settlers, which take whatever has gathered
(up to BATCH tickets) and settle it together: one read of the streams, one commit,
the timers published at once, one version check. A storm of deadlines then costs
a few round trips per batch instead of per ticket.

A message is acked only once its effect is recorded and the timer publish is
acknowledged; a store or NATS failure naks it with a delay. Several instances may
run at once: recording is idempotent, and `_settle_batch` makes sure that the last
timer published for a ticket was computed from its latest version (see there).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar
from uuid import UUID, uuid4

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.sla_clock.alarms import ACTOR, AlarmConflict, Settled, SlaAlarms
from services.sla_clock.timers import DUE_SUBJECTS, LEAD_SECONDS, Due, Timers
from shared.bus import TRANSIENT_ERRORS
from shared.clock import Clock
from shared.domain.errors import TicketNotFound
from shared.domain.ticket import Ticket
from shared.event_format import subjects_of

log = logging.getLogger(__name__)

# The ticket events that may move a clock, owe an alert or change the escalation
# level: all but dispatch's (Ticket.Staffing). Filtered by the server, so the many
# assignments a storm brings cost this service nothing. (The SLA events themselves,
# events.sla.*, are saved with a ticket event that is consumed, or recorded here.)
TICKET_EVENTS = sorted(
    name for name in subjects_of(Ticket.Event) - subjects_of(Ticket.Staffing) if name.startswith("events.ticket.")
)
EVENTS_CONSUMER = "sla_clock"
DUE_CONSUMER = "sla_clock_due"
# How soon a message in the hands of an instance that died goes to another one. It
# must exceed a hold plus the wait for a settler plus a settle; a settle that
# outlasts it is merely repeated.
ACK_WAIT_SECONDS = 10.0
# Messages an instance holds unanswered per consumer: timers waiting out their lead
# cost nothing but memory, so many may wait at once; the wait for a settler stays
# well inside the ack wait at a few hundred settles a second.
MAX_OUTSTANDING = 1024
# Tickets settled together, and batches in progress at once per instance: while
# one batch is in the store, another publishes its timers.
BATCH = 64
SETTLERS = 4
FETCH_SECONDS = 1.0  # also how long a stop may take to be noticed
FETCH_BATCH = 256
RETRY_DELAY_SECONDS = 1.0
# A message held longer than this is settled anyway (records nothing yet, re-arms):
# it only happens when the server's clock runs well ahead of ours.
MAX_HOLD_SECONDS = 2 * LEAD_SECONDS
_SETTLE_ATTEMPTS = 10

A = TypeVar("A")
R = TypeVar("R")

# Failures worth retrying: NATS or the database unreachable, slow, or refusing.
RETRIED = (*TRANSIENT_ERRORS, AlarmConflict)


@dataclass
class _Ask:
    """A ticket a handler wants settled; `done` resolves once its timer is right."""

    ticket_id: UUID
    correlation_id: str | None
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    rounds: int = 0


class SlaClockWorker:
    def __init__(
        self, alarms: SlaAlarms, timers: Timers, js: JetStreamContext, events_stream: str, clock: Clock
    ) -> None:
        self.alarms = alarms
        self.timers = timers
        self.js = js
        self.events_stream = events_stream
        self.clock = clock
        self._asks: asyncio.Queue[_Ask] = asyncio.Queue()
        # Each settler runs one store call at a time: a thread each is enough.
        self._threads = ThreadPoolExecutor(SETTLERS, thread_name_prefix="settle")

    async def run(self, stop: asyncio.Event) -> None:
        """Consume both streams until `stop` is set. Returns once no store call is left
        running, so the caller may close the store."""
        events = await self._subscribe(self.events_stream, EVENTS_CONSUMER, TICKET_EVENTS)
        due = await self._subscribe(self.timers.stream, DUE_CONSUMER, [DUE_SUBJECTS])
        log.info("keeping SLA time for stream %s with timers in %s", self.events_stream, self.timers.stream)
        settlers = [asyncio.create_task(self._settler()) for _ in range(SETTLERS)]
        try:
            await asyncio.gather(_consume(events, self._on_event, stop), _consume(due, self._on_due, stop))
        finally:
            for settler in settlers:
                settler.cancel()
            await asyncio.gather(*settlers, return_exceptions=True)
            # A cancelled settler leaves its thread running the store call to the end.
            await asyncio.to_thread(self._threads.shutdown)

    async def _in_thread(self, call: Callable[[A], R], argument: A) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._threads, call, argument)

    async def _subscribe(self, stream: str, durable: str, subjects: list[str]) -> JetStreamContext.PullSubscription:
        # Creating a consumer that exists with this configuration changes nothing, so
        # every instance may do it at start; one made by an earlier release with other
        # filters is brought to these. (nats-py puts a single filter in the API subject
        # and several in the request: deploy/nats allows each consumer its own form.)
        single = subjects[0] if len(subjects) == 1 else None
        await self.js.add_consumer(stream, ConsumerConfig(
            name=durable, durable_name=durable, filter_subject=single, filter_subjects=None if single else subjects,
            deliver_policy=DeliverPolicy.ALL,
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
        await self._settle(UUID(envelope["subject"]), envelope.get("correlationid"))

    async def _on_due(self, msg: Msg) -> None:
        due = Due.from_message(msg)
        early = (due.at - self.clock.now()).total_seconds()
        if early > 0:  # held before it is asked for: a thousand timers may wait at once
            await asyncio.sleep(min(early, MAX_HOLD_SECONDS))
        await self._settle(due.ticket_id, due.correlation_id)

    async def _settle(self, ticket_id: UUID, correlation_id: str | None) -> None:
        """Record what is due, then leave the ticket one timer for what comes next."""
        ask = _Ask(ticket_id, correlation_id)
        self._asks.put_nowait(ask)
        await ask.done

    async def _settler(self) -> None:
        while True:
            batch = [await self._asks.get()]
            while len(batch) < BATCH and not self._asks.empty():
                batch.append(self._asks.get_nowait())
            await self._settle_batch(batch)

    async def _settle_batch(self, batch: list[_Ask]) -> None:
        """Settle every ticket asked for, each ask answered by its own outcome.

        Two instances (or two settlers) may handle the same ticket at once, and the
        slower one may publish a timer computed from an older version after the faster
        one. So the ticket's version is read with its next instant and again after the
        timer is published; if it moved, the ask goes round again. The last timer
        published is then always one whose version was still the latest after it was
        published.
        """
        asks: dict[UUID, list[_Ask]] = {}
        for ask in batch:
            asks.setdefault(ask.ticket_id, []).append(ask)
        try:
            correlation = {ticket_id: same[0].correlation_id or str(uuid4()) for ticket_id, same in asks.items()}
            outcomes = await self._in_thread(self.alarms.settle_many, correlation)
            for ticket_id, outcome in outcomes.items():
                if isinstance(outcome, Settled) and outcome.recorded:
                    log.info("ticket %s: recorded %s", ticket_id, ", ".join(outcome.recorded))
            settled = {ticket_id: o for ticket_id, o in outcomes.items() if isinstance(o, Settled)}
            published = await asyncio.gather(
                *(self._rearm(ticket_id, settled[ticket_id], asks[ticket_id][0].correlation_id) for ticket_id in settled),
                return_exceptions=True,
            )
            for ticket_id, failure in zip(list(settled), published):
                if failure is not None:
                    outcomes[ticket_id] = failure
                    del settled[ticket_id]
            versions = await self._in_thread(self.alarms.versions, list(settled)) if settled else {}
        except Exception as error:  # noqa: BLE001 - each handler hears it and answers its message
            for ask in batch:
                _answer(ask, error)
            return
        for ticket_id, same in asks.items():
            outcome = outcomes[ticket_id]
            if not isinstance(outcome, Settled):
                for ask in same:
                    _answer(ask, outcome)
            elif versions[ticket_id] == outcome.version:
                for ask in same:
                    _answer(ask, None)
            else:
                for ask in same:
                    ask.rounds += 1
                    if ask.rounds < _SETTLE_ATTEMPTS:
                        self._asks.put_nowait(ask)
                    else:
                        _answer(ask, AlarmConflict(f"ticket {ticket_id} kept changing while its timer was set"))

    async def _rearm(self, ticket_id: UUID, settled: Settled, correlation_id: str | None) -> None:
        if settled.next_at is None:
            await self.timers.disarm(ticket_id)
        else:
            await self.timers.arm(ticket_id, settled.next_at, correlation_id)


def _answer(ask: _Ask, outcome: BaseException | None) -> None:
    if ask.done.done():  # its handler was cancelled (stopping)
        return
    if outcome is None:
        ask.done.set_result(None)
    else:
        ask.done.set_exception(outcome)


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
