"""The SLA compliance report per customer and month: for each target, how many tickets
met it, breached it, are still open on it, or were stopped (closed or cancelled) before
it was met. The periodic analysis report the seeds promise the customer.

One row per ticket, holding each target's outcome as of the ticket's last event, so a
row only changes when the ticket does and a rebuild gives the same rows. A running
target counts as breached once the SLA clock service has recorded the breach (or a
later event shows the due instant passed); until then it is open. A month is that of
the ticket's receipt, in the service's local time zone.
"""
from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Boolean, Column, ColumnElement, Engine, Index, Integer, String, Table, and_, case, func, or_, select

from shared.domain.ticket import Ticket
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata
from shared.read_db import reading
from shared.sla.clocks import ClockState, view
from shared.sla.policy import CALLBACK, TARGETS, Policy
from shared.store import EventStore

NAME = "sla_compliance"
REPORTED_TARGETS = (*TARGETS, CALLBACK)
OUTCOMES = ("met", "breached", "open", "stopped")
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"  # YYYY-MM

_OUTCOME = {
    ClockState.MET: "met",
    ClockState.BREACHED: "breached",
    ClockState.RUNNING: "open",
    ClockState.PAUSED: "open",
    ClockState.STOPPED: "stopped",
    ClockState.NOT_APPLICABLE: None,  # never started: not owed (no visit needed, not resolved yet)
}

compliance = Table(
    "sla_compliance",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("number", String(32), nullable=False),
    Column("customer", String(200), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM of receipt, local time
    Column("committed", Boolean, nullable=False),
    *(Column(target, String(16)) for target in REPORTED_TARGETS),  # an outcome, or None: not owed
    Column("version", Integer, nullable=False),
    Index("ix_sla_compliance_customer_month", "customer", "month"),
)


class SlaComplianceProjection(AggregateRows):
    name = NAME
    table = compliance
    key = "id"
    events = Ticket.Event

    def __init__(self, store: EventStore, engine: Engine, policy: Policy, zone: str = "Asia/Shanghai") -> None:
        super().__init__(store, engine)
        self.policy = policy
        self.zone = ZoneInfo(zone)

    def row(self, ticket: Ticket) -> dict[str, Any]:
        outcomes = {
            target: _OUTCOME[view(clock, self.policy, ticket.modified_on).state]
            for target, clock in ticket.sla.clocks.items()
        }
        return {
            "id": str(ticket.id), "number": ticket.number, "customer": ticket.customer,
            "month": ticket.received_at.astimezone(self.zone).strftime("%Y-%m"),
            "committed": ticket.sla_plan is not None,
            **{target: outcomes.get(target) for target in REPORTED_TARGETS},
            "version": ticket.version,
        }

    def report(self, customer: str, month: str) -> dict[str, Any]:
        """One customer's month: tickets received, how many with an SLA commitment, and
        per target the count of each outcome, the compliance rate (met / decided) and
        the tickets that breached it."""
        where = and_(compliance.c.customer == customer, compliance.c.month == month)
        counts = [
            _count(compliance.c[target] == outcome).label(f"{target}_{outcome}")
            for target in REPORTED_TARGETS
            for outcome in OUTCOMES
        ]
        any_breach = or_(*(compliance.c[target] == "breached" for target in REPORTED_TARGETS))
        with reading(self.engine) as conn:
            totals = conn.execute(
                select(func.count().label("tickets"), _count(compliance.c.committed).label("committed"), *counts).where(where)
            ).mappings().one()
            late = conn.execute(
                select(compliance).where(where, any_breach).order_by(compliance.c.number)
            ).mappings().all()
        return {
            "customer": customer,
            "month": month,
            "time_zone": self.zone.key,
            "tickets": totals["tickets"],
            "committed": totals["committed"],
            "targets": [_target(target, totals, late) for target in REPORTED_TARGETS],
        }


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _target(target: str, totals: Any, late: list[Any]) -> dict[str, Any]:
    outcome = {name: totals[f"{target}_{name}"] for name in OUTCOMES}
    decided = outcome["met"] + outcome["breached"]
    return {
        "target": target,
        **outcome,
        "compliance": round(outcome["met"] / decided, 4) if decided else None,
        "breached_tickets": [row["number"] for row in late if row[target] == "breached"],
    }
