"""The SLA alarm core: what a ticket's clocks owe at an instant, recorded on the ticket.

No NATS here: the worker decides *when* to look; this module decides what is due
then, and records it. Recording is idempotent (the aggregate refuses a warning or
breach already recorded for a target and cycle), so firing twice, early, late, or
from two instances at once leaves one event per target and cycle. The store API is
synchronous: async callers run these methods in a thread.
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from shared.clock import Clock
from shared.combining import GroupCommit
from shared.desk import TicketDesk
from shared.domain.errors import TicketNotFound
from shared.domain.ticket import ESCALATION_LEVELS, Actor, Ticket
from shared.event_format import event_type
from shared.sla.clocks import Alert, due_alerts, pending_alerts
from shared.sla.policy import Policy
from shared.store import EventStore

ACTOR: Actor = {"kind": "service", "id": "sla_clock"}
_SAVE_ATTEMPTS = 20


class Settled(NamedTuple):
    recorded: list[str]  # the event types recorded now
    version: int  # the ticket's version after them
    next_at: datetime | None  # the next warning or breach owed; None: nothing more


class AlarmConflict(Exception):
    """The ticket kept changing under us; the caller should try again later."""


class SlaAlarms:
    def __init__(self, store: EventStore, policy: Policy, clock: Clock) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        # Many tickets fall due together in a storm: their alerts share one commit.
        self._saves = GroupCommit(store)
        self._desk = TicketDesk(store, clock)  # for reading tickets only

    def fire(self, ticket_id: UUID, correlation_id: str) -> list[str]:
        """Record every warning and breach due now, and the escalations the breaches
        call for, in one save. Returns the recorded event types ([] if nothing was due
        or another writer recorded it first)."""
        return self.settle(ticket_id, correlation_id).recorded

    def settle(self, ticket_id: UUID, correlation_id: str) -> Settled:
        """`fire`, and from the same read of the ticket its version and the next
        instant to arm for: one replay of the stream per timer, not two."""
        outcome = self.settle_many({ticket_id: correlation_id})[ticket_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def settle_many(self, asks: dict[UUID, str]) -> dict[UUID, Settled | TicketNotFound | AlarmConflict]:
        """`settle` for many tickets (id → correlation id) at once: one read of all
        their streams, one commit for all their alerts. A ticket another writer
        changed meanwhile is read and settled again; one that does not exist is
        answered TicketNotFound, without holding up the others."""
        outcomes: dict[UUID, Settled | TicketNotFound | AlarmConflict] = {}
        waiting = dict(asks)
        for _ in range(_SAVE_ATTEMPTS):
            tickets = self.store.get_many(waiting)
            now = self.clock.now()
            changed = []
            for ticket_id, correlation_id in waiting.items():
                ticket = tickets.get(ticket_id)
                if not isinstance(ticket, Ticket):
                    outcomes[ticket_id] = TicketNotFound(str(ticket_id))
                    continue
                # Never record an event before the one it follows (a lagging replica clock).
                at = max(now, ticket.modified_on)
                for alert in due_alerts(ticket.sla, self.policy, now):
                    self._record(ticket, alert, at, correlation_id)
                if ticket.pending_events:
                    changed.append(ticket)
                else:
                    outcomes[ticket_id] = Settled([], ticket.version, self._next_owed(ticket))
            recorded = {ticket.id: [event_type(event) for event in ticket.pending_events] for ticket in changed}
            try:
                if changed:
                    self._saves.save(*changed)
            except RecordConflictError:
                # Another writer (maybe another instance) saved first: look again.
                waiting = {ticket.id: waiting[ticket.id] for ticket in changed}
                continue
            for ticket in changed:
                outcomes[ticket.id] = Settled(recorded[ticket.id], ticket.version, self._next_owed(ticket))
            return outcomes
        for ticket_id in waiting:
            outcomes[ticket_id] = AlarmConflict(f"ticket {ticket_id} kept changing; gave up after {_SAVE_ATTEMPTS} attempts")
        return outcomes

    def next_instant(self, ticket_id: UUID) -> datetime | None:
        """The earliest warning or breach the ticket's running clocks still owe; None
        when none is owed (no commitment, every clock met, stopped or paused)."""
        return self._next_owed(self._desk.get(ticket_id))

    def _next_owed(self, ticket: Ticket) -> datetime | None:
        owed = [alert.due_at for alert in pending_alerts(ticket.sla, self.policy) if _recordable(ticket, alert)]
        return min(owed, default=None)

    def versions(self, ticket_ids: Collection[UUID]) -> dict[UUID, int]:
        """How far each ticket's stream has got (0 if it has no events)."""
        return self.store.last_versions(ticket_ids)

    def _record(self, ticket: Ticket, alert: Alert, at: datetime, correlation_id: str) -> None:
        recorded = ticket.record_sla_alert(
            kind=alert.kind, target=alert.target, cycle=alert.cycle, due_at=alert.due_at,
            at=at, actor=ACTOR, correlation_id=correlation_id,
        )
        level = self.policy.escalation_on_breach.get(alert.target)
        if not (recorded and alert.kind == "breach" and level):
            return
        if ESCALATION_LEVELS.index(level) > ESCALATION_LEVELS.index(ticket.escalation_level):
            ticket.escalate(
                level=level, reason=f"{alert.target} target breached (due {alert.due_at.isoformat()})",
                trigger=f"breach:{alert.target}", at=at, actor=ACTOR, correlation_id=correlation_id,
            )


def _recordable(ticket: Ticket, alert: Alert) -> bool:
    # A warning left unrecorded because its breach came first is never owed any more.
    return alert.kind == "breach" or not ticket.sla.clocks[alert.target].breached
