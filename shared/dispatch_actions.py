"""What engineers (and complaining customers) do to a ticket's assignment through the
dispatch API: accept, decline, depart, arrive, hand back, complain.

Leaving a ticket (decline, hand back, complaint) frees the engineer's capacity in
the same save; finding the next engineer is the dispatcher's reaction to the
recorded event, so it happens the same way whoever caused it.
"""
from __future__ import annotations

from typing import Any

from shared.clock import Clock
from shared.desk import TicketDesk
from shared.dispatch_roster import EngineerRoster
from shared.dispatch_store import instant, save_retrying
from shared.domain.errors import NotOnTicket
from shared.domain.ticket import Actor, Ticket
from shared.store import EventStore


class EngineerActions:
    def __init__(self, store: EventStore, clock: Clock, roster: EngineerRoster, tickets: TicketDesk) -> None:
        self.store = store
        self.clock = clock
        self.roster = roster
        self.tickets = tickets

    def accept(self, reference: str, *, engineer: str, actor: Actor, correlation_id: str) -> Ticket:
        return self._act(reference, "accept_assignment", engineer, actor, correlation_id)

    def decline(self, reference: str, *, engineer: str, reason: str, actor: Actor, correlation_id: str) -> Ticket:
        return self._act(reference, "decline_assignment", engineer, actor, correlation_id, leaves=True, reason=reason)

    def depart(self, reference: str, *, engineer: str, eta: str, actor: Actor, correlation_id: str) -> Ticket:
        return self._act(reference, "depart", engineer, actor, correlation_id, eta=eta)

    def arrive(self, reference: str, *, engineer: str, note: str, actor: Actor, correlation_id: str) -> Ticket:
        """On site: the ticket's own `arrive` command (it meets the on-site target), for an engineer on the ticket."""
        return self._act(reference, "arrive", engineer, actor, correlation_id, note=note)

    def hand_back(self, reference: str, *, engineer: str, reason: str, actor: Actor, correlation_id: str) -> Ticket:
        return self._act(reference, "hand_back", engineer, actor, correlation_id, leaves=True, reason=reason)

    def complain(self, reference: str, *, engineer: str | None, reason: str, actor: Actor, correlation_id: str) -> Ticket:
        """The customer complains about an engineer (the lead unless named, seed 003): they
        leave the ticket, and dispatch sends someone else of at least their level."""
        ticket = self.tickets.get(reference)
        named = engineer or ticket.lead_engineer
        level = next((a.level for a in ticket.assignments if a.engineer == named), None)
        if named is None or level is None:
            raise NotOnTicket("complain_about_engineer", ticket.status, f"{named or 'no engineer'} is not on ticket {ticket.number}")
        return self._act(reference, "complain_about_engineer", named, actor, correlation_id, leaves=True, level=level, reason=reason)

    def _act(
        self, reference: str, command: str, engineer: str, actor: Actor, correlation_id: str, *, leaves: bool = False, **arguments: Any
    ) -> Ticket:
        def decide() -> tuple[Ticket, list[Any]]:
            ticket = self.tickets.get(reference)
            if engineer not in ticket.engineers:
                raise NotOnTicket(command, ticket.status, f"{engineer} is not on ticket {ticket.number}")
            leaving = self.roster.find(engineer) if leaves else None
            at = instant(self.clock, ticket, *([leaving] if leaving else []))
            getattr(ticket, command)(engineer=engineer, at=at, actor=actor, correlation_id=correlation_id, **arguments)
            if leaving is None:
                return ticket, [ticket]
            why = f"{command.replace('_', ' ')}: {arguments.get('reason', '')}"
            leaving.release(ticket_id=ticket.id, reason=why, at=at, actor=actor, correlation_id=correlation_id)
            return ticket, [ticket, leaving]

        return save_retrying(self.store, decide)
