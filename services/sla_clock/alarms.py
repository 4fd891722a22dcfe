"""The SLA alarm core: what a ticket's clocks owe at an instant, recorded on the ticket.

No NATS here: the worker decides *when* to look; this module decides what is due
then, and records it. Recording is idempotent (the aggregate refuses a warning or
breach already recorded for a target and cycle), so firing twice, early, late, or
from two instances at once leaves one event per target and cycle. The store API is
synchronous: async callers run these methods in a thread.
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from shared.clock import Clock
from shared.combining import GroupCommit
from shared.desk import TicketDesk
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
        for _ in range(_SAVE_ATTEMPTS):
            ticket = self._desk.get(ticket_id)
            now = self.clock.now()
            # Never record an event before the one it follows (a lagging replica clock).
            at = max(now, ticket.modified_on)
            for alert in due_alerts(ticket.sla, self.policy, now):
                self._record(ticket, alert, at, correlation_id)
            recorded = [event_type(event) for event in ticket.pending_events]
            if recorded:
                try:
                    self._saves.save(ticket)
                except RecordConflictError:
                    continue  # another writer (maybe another instance) saved first: look again
            return Settled(recorded, ticket.version, self._next_owed(ticket))
        raise AlarmConflict(f"ticket {ticket_id} kept changing; gave up after {_SAVE_ATTEMPTS} attempts")

    def next_instant(self, ticket_id: UUID) -> datetime | None:
        """The earliest warning or breach the ticket's running clocks still owe; None
        when none is owed (no commitment, every clock met, stopped or paused)."""
        return self._next_owed(self._desk.get(ticket_id))

    def _next_owed(self, ticket: Ticket) -> datetime | None:
        owed = [alert.due_at for alert in pending_alerts(ticket.sla, self.policy) if _recordable(ticket, alert)]
        return min(owed, default=None)

    def version(self, ticket_id: UUID) -> int:
        """How far the ticket's stream has got (0 if it has no events)."""
        last = self.store.recorder.select_events(ticket_id, desc=True, limit=1)
        return last[0].originator_version if last else 0

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
