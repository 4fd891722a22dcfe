"""The ticket list: one row per ticket, for `GET /v1/tickets` filters and paging.

Rows are the Ticket aggregate's own state after each event (the aggregate is evolved
by the event itself), so the list can never disagree with a replay of the stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, Integer, String, Table, func, select

from shared.domain.ticket import Ticket
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata
from shared.read_db import reading

NAME = "ticket_list"

tickets = Table(
    "ticket_list",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("number", String(32), nullable=False, unique=True),
    Column("status", String(32), nullable=False, index=True),
    Column("severity", String(4), nullable=False, index=True),
    Column("category", String(32), nullable=False),
    Column("customer", String(200), nullable=False, index=True),
    Column("contract", String(200)),
    Column("city", String(200)),
    Column("region", String(200), index=True),
    Column("engineer", String(200), index=True),  # the lead engineer
    Column("escalation_level", String(4), nullable=False),
    Column("breached", Boolean, nullable=False),  # any SLA target breached, in any cycle
    Column("summary", String(200), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
)


def _row(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": str(ticket.id), "number": ticket.number, "status": str(ticket.status),
        "severity": str(ticket.severity), "category": str(ticket.category), "customer": ticket.customer,
        "contract": ticket.contract, "city": ticket.site.get("city"), "summary": ticket.summary,
        "region": ticket.site.get("region") or ticket.entitlement.get("region"), "engineer": ticket.lead_engineer,
        "escalation_level": ticket.escalation_level, "breached": any(c.breached for c in ticket.sla.clocks.values()),
        "received_at": ticket.received_at, "updated_at": ticket.modified_on, "version": ticket.version,
    }


@dataclass(frozen=True)
class TicketFilter:
    status: str | None = None
    severity: str | None = None
    customer: str | None = None
    region: str | None = None
    engineer: str | None = None
    escalation_level: str | None = None
    breached: bool | None = None
    received_from: datetime | None = None
    received_until: datetime | None = None
    limit: int = 50
    offset: int = 0
    customers: frozenset[str] | None = None  # the caller's scope: only these customers' tickets
    ids: frozenset[str] | None = None  # the caller's scope: only these tickets


class TicketListProjection(AggregateRows):
    name = NAME
    table = tickets
    key = "id"
    events = Ticket.Event

    def row(self, ticket: Ticket) -> dict[str, Any]:
        return _row(ticket)

    def query(self, where: TicketFilter) -> tuple[list[dict[str, Any]], int]:
        conditions = [
            getattr(tickets.c, name) == value
            for name in ("status", "severity", "customer", "region", "engineer", "escalation_level", "breached")
            if (value := getattr(where, name)) is not None
        ]
        if where.customers is not None:
            conditions.append(tickets.c.customer.in_(sorted(where.customers)))
        if where.ids is not None:
            conditions.append(tickets.c.id.in_(sorted(where.ids)))
        if where.received_from is not None:
            conditions.append(tickets.c.received_at >= where.received_from)
        if where.received_until is not None:
            conditions.append(tickets.c.received_at < where.received_until)
        with reading(self.engine) as conn:
            total = conn.scalar(select(func.count()).select_from(tickets).where(*conditions)) or 0
            rows = conn.execute(
                select(tickets).where(*conditions)
                .order_by(tickets.c.received_at.desc(), tickets.c.number.desc())
                .limit(where.limit).offset(where.offset)
            ).mappings().all()
        return [dict(r) for r in rows], total
