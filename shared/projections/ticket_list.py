"""The ticket list: one row per ticket, for `GET /v1/tickets` filters and paging.

Rows are the Ticket aggregate's own state after each event (the aggregate is evolved
by the event itself), so the list can never disagree with a replay of the stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Column, DateTime, Integer, String, Table, func, select

from shared.domain.ticket import Ticket
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata

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
        "received_at": ticket.received_at, "updated_at": ticket.modified_on, "version": ticket.version,
    }


@dataclass(frozen=True)
class TicketFilter:
    status: str | None = None
    severity: str | None = None
    customer: str | None = None
    limit: int = 50
    offset: int = 0


class TicketListProjection(AggregateRows):
    name = NAME
    table = tickets
    key = "id"
    events = Ticket.Event

    def row(self, ticket: Ticket) -> dict[str, Any]:
        return _row(ticket)

    def ids_for_customer(self, customer: str) -> frozenset[UUID]:
        with self.engine.connect() as conn:
            return frozenset(UUID(i) for i in conn.scalars(select(tickets.c.id).where(tickets.c.customer == customer)))

    def query(self, where: TicketFilter) -> tuple[list[dict[str, Any]], int]:
        conditions = [
            getattr(tickets.c, name) == value
            for name in ("status", "severity", "customer")
            if (value := getattr(where, name)) is not None
        ]
        with self.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(tickets).where(*conditions)) or 0
            rows = conn.execute(
                select(tickets).where(*conditions)
                .order_by(tickets.c.received_at.desc(), tickets.c.number.desc())
                .limit(where.limit).offset(where.offset)
            ).mappings().all()
        return [dict(r) for r in rows], total
