"""Spare units lent to customers: reserve (nearest warehouse first), ship, install on
loan, return, convert; overdue loans raised once each.

Every step that concerns a ticket is recorded in both streams in one save: the
unit's (its state) and the ticket's (its story), so a replay of either tells it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from shared.clock import Clock
from shared.desk import TicketDesk
from shared.dispatch_roster import SpareStock
from shared.dispatch_store import DISPATCH_ACTOR, ReadModels, Workspace, instant, save_retrying
from shared.dispatching import DispatchRules, nearest_first
from shared.domain.errors import IllegalUnitTransition, NotOnTicket, SpareNotAllowed
from shared.domain.spare_unit import Conversion, SpareUnit, UnitState
from shared.domain.ticket import ESCALATION_LEVELS, Actor, Ticket
from shared.sla.calendar import add_working_time
from shared.store import EventStore


@dataclass(frozen=True)
class Reservation:
    """What a request for a spare unit came to: the unit reserved, or why none was."""

    unit: str | None
    warehouse: str | None
    distance_km: float | None
    detail: str


class SpareLogistics:
    def __init__(
        self, store: EventStore, clock: Clock, rules: DispatchRules, reads: ReadModels, stock: SpareStock, tickets: TicketDesk
    ) -> None:
        self.store = store
        self.clock = clock
        self.rules = rules
        self.reads = reads
        self.stock = stock
        self.tickets = tickets

    # -- reserving -------------------------------------------------------------------

    def request(self, reference: str, *, engineer: str, model: str | None, reason: str, actor: Actor, correlation_id: str) -> Reservation:
        """An engineer on the ticket asks for a spare unit (of the ticket's device model by default)."""

        def decide() -> tuple[Reservation, list[Any]]:
            self.reads.refresh()
            ticket = self.tickets.get(reference)
            if engineer not in ticket.engineers:
                raise NotOnTicket("reserve_spare", ticket.status, f"{engineer} is not on ticket {ticket.number}")
            wanted = model or ticket.device.get("model")
            if not wanted:
                raise SpareNotAllowed("reserve_spare", ticket.status, f"ticket {ticket.number} names no device model: give one")
            if str(ticket.severity) not in self.rules.spare_severities:
                allowed = "/".join(sorted(self.rules.spare_severities))
                raise SpareNotAllowed("reserve_spare", ticket.status, f"spare units are lent for {allowed} faults, not {ticket.severity}")
            return self.reserve_into(ticket, wanted, reason, cause=0, actor=actor, correlation_id=correlation_id, within=Workspace())

        return save_retrying(self.store, decide)

    def reserve_into(
        self, ticket: Ticket, model: str, reason: str, *, cause: int, actor: Actor, correlation_id: str, within: Workspace,
    ) -> tuple[Reservation, list[Any]]:
        """Reserve the nearest available unit of `model` for the ticket, or record that
        there is none and what happens instead. Returns the outcome and the aggregates
        to save; the caller saves (and decides again on a conflict). Units are read
        `within` the caller's workspace, so a batch never promises one unit twice."""
        for option, km in nearest_first(self.rules, self.reads.units.available(model), ticket.site.get("city")):
            unit = within.get(self.stock, option.code)
            at = instant(self.clock, ticket, unit)
            try:
                unit.reserve(ticket_id=ticket.id, number=ticket.number, reason=reason, at=at, actor=actor, correlation_id=correlation_id)
            except IllegalUnitTransition:
                continue  # the list trailed: someone reserved it meanwhile; try the next nearest
            city = self.rules.warehouses.get(option.warehouse)
            distance = "distance unknown" if km is None else f"{km:g} km"
            detail = f"nearest available {model}: {option.code} at {option.warehouse} ({city}, {distance})"
            ticket.reserve_spare(
                unit=option.code, serial=unit.record.serial, model=model, warehouse=option.warehouse, distance_km=km,
                reason=f"{reason}; {detail}", cause=cause, at=at, actor=actor, correlation_id=correlation_id,
            )
            return Reservation(option.code, option.warehouse, km, detail), [ticket, unit]
        return self._no_stock(ticket, model, cause=cause, actor=actor, correlation_id=correlation_id), [ticket]

    def _no_stock(self, ticket: Ticket, model: str, *, cause: int, actor: Actor, correlation_id: str) -> Reservation:
        at = instant(self.clock, ticket)
        level = self.rules.no_stock_escalates_to
        reason = f"no {model} available in any warehouse"
        escalate = ESCALATION_LEVELS.index(ticket.escalation_level) < ESCALATION_LEVELS.index(level)
        next_step = (
            f"escalated to {level} to find another way (repair on site, a unit from the vendor)" if escalate
            else f"already at {ticket.escalation_level}: the service manager sources a unit; request again when one is back in stock"
        )
        ticket.record_no_spare(model=model, reason=reason, next_step=next_step, cause=cause, at=at, actor=actor, correlation_id=correlation_id)
        if escalate:
            ticket.escalate(level=level, reason=reason, trigger="dispatch:no_stock", at=at, actor=actor, correlation_id=correlation_id)
        return Reservation(None, None, None, f"{reason}; {next_step}")

    def release_unshipped(self, ticket: Ticket, reason: str, *, correlation_id: str, within: Workspace) -> list[SpareUnit]:
        """Give back the units reserved for the ticket and not yet shipped (read `within`
        the caller's workspace)."""
        released = []
        for code in sorted(ticket.spare_units):
            unit = within.get(self.stock, code)
            if unit.state is not UnitState.RESERVED:
                continue
            at = instant(self.clock, ticket, unit)
            unit.release(reason=reason, at=at, actor=DISPATCH_ACTOR, correlation_id=correlation_id)
            ticket.release_spare(unit=code, reason=reason, at=at, actor=DISPATCH_ACTOR, correlation_id=correlation_id)
            released.append(unit)
        return released

    # -- the unit's way to the customer and back ---------------------------------------

    def ship(self, code: str, *, reference: str, actor: Actor, correlation_id: str) -> SpareUnit:
        return self._step(code, "ship", "ship_spare", actor, correlation_id, reference=reference)

    def install(self, code: str, *, return_by: datetime | None, actor: Actor, correlation_id: str) -> SpareUnit:
        """On loan at the customer until `return_by` (default: the deployment's loan period
        in working time from now)."""
        # The default is counted from the instant the install is recorded, which may be
        # later than our clock says (the ticket moved on at another writer's time).
        due = (lambda _: return_by.astimezone(timezone.utc)) if return_by else self._loan_due
        return self._step(code, "install", "install_spare", actor, correlation_id, return_by=due)

    def return_to_stock(self, code: str, *, note: str, actor: Actor, correlation_id: str) -> SpareUnit:
        return self._step(code, "return_to_stock", "return_spare", actor, correlation_id, note=note)

    def convert(self, code: str, *, how: Conversion, note: str, actor: Actor, correlation_id: str) -> SpareUnit:
        return self._step(code, "convert", "convert_loan", actor, correlation_id, how=str(how), note=note)

    def restock(self, code: str, *, note: str, actor: Actor, correlation_id: str) -> SpareUnit:
        return self._step(code, "restock", None, actor, correlation_id, note=note)

    def retire(self, code: str, *, reason: str, actor: Actor, correlation_id: str) -> SpareUnit:
        return self._step(code, "retire", None, actor, correlation_id, reason=reason)

    def flag_overdue(self) -> int:
        """Raise the overdue event of every loan past its return-by instant; returns how many."""
        self.reads.refresh()
        now = self.clock.now()
        raised = 0
        for code in self.reads.units.loans_due(now):

            def decide(code: str = code) -> tuple[bool, list[Any]]:
                unit = self.stock.get(code)
                ticket = self._ticket_of(unit)
                at = instant(self.clock, unit, *ticket)
                if not unit.flag_overdue(at=at, actor=DISPATCH_ACTOR, correlation_id=f"overdue:{code}"):
                    return False, []  # returned meanwhile, or another instance was first
                for t in ticket:
                    t.record_return_overdue(unit=code, return_by=unit.return_by, at=at, actor=DISPATCH_ACTOR, correlation_id=f"overdue:{code}")
                return True, [unit, *ticket]

            raised += save_retrying(self.store, decide)
        return raised

    def _step(self, code: str, command: str, ticket_command: str | None, actor: Actor, correlation_id: str, **given: Any) -> SpareUnit:
        """Run `command` on the unit (and `ticket_command` on its ticket) in one save. An
        argument given as a function is called with the instant the step is recorded at."""
        def decide() -> tuple[SpareUnit, list[Any]]:
            unit = self.stock.get(code)
            ticket = self._ticket_of(unit) if ticket_command else ()
            at = instant(self.clock, unit, *ticket)
            arguments = {name: value(at) if callable(value) else value for name, value in given.items()}
            getattr(unit, command)(at=at, actor=actor, correlation_id=correlation_id, **arguments)
            for t in ticket:
                getattr(t, ticket_command)(unit=code, at=at, actor=actor, correlation_id=correlation_id, **arguments)
            return unit, [unit, *ticket]

        return save_retrying(self.store, decide)

    def _ticket_of(self, unit: SpareUnit) -> tuple[Ticket, ...]:
        return (self.tickets.get(UUID(unit.ticket_id)),) if unit.ticket_id else ()

    def _loan_due(self, at: datetime) -> datetime:
        return add_working_time(self.rules.calendars[self.rules.loan_calendar], at, self.rules.loan_seconds)
