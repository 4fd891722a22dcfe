"""The ticket list: one row per ticket, for `GET /v1/tickets` filters and paging.

Rows are the Ticket aggregate's own state after each event (the aggregate is evolved
by the event itself), so the list can never disagree with a replay of the stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Column, DateTime, Engine, Integer, String, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite

from shared.domain.ticket import Ticket
from shared.projections.tracking import metadata, read_position, save_position
from shared.store import EventStore

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


class TicketListProjection:
    def __init__(self, store: EventStore, engine: Engine) -> None:
        self.store = store
        self.engine = engine
        metadata.create_all(engine)
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert

    def catch_up(self, batch: int = 500) -> int:
        """Apply the next batch of events; returns how many notifications it read."""
        with self.engine.begin() as conn:
            position = read_position(conn, NAME)
            notifications = self.store.recorder.select_notifications(position, batch, inclusive_of_start=False)
            if not notifications:
                return 0
            evolved: dict[UUID, Ticket] = {}
            for notification in notifications:
                event = self.store.decode(notification)
                if isinstance(event, Ticket.Event):
                    evolved[event.originator_id] = self._evolve(evolved.get(event.originator_id), event)
            for ticket in evolved.values():
                row = _row(ticket)
                upsert = self._insert(tickets).values(row)
                conn.execute(upsert.on_conflict_do_update(index_elements=["id"], set_=row))
            save_position(conn, NAME, notifications[-1].id)
            return len(notifications)

    def _evolve(self, ticket: Ticket | None, event: Ticket.Event) -> Ticket:
        if ticket is None and event.originator_version > 1:
            ticket = self.store.repository.get(event.originator_id, version=event.originator_version - 1)
        return event.mutate(ticket)

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
