"""The contract list: one row per contract, for `GET /v1/contracts?customer=`.

Rows are the Contract aggregate's own state after each event (an Amended event
carries only the changed terms, so the row is the evolved aggregate, never a
patch), and each batch is committed with its position in the notification log.
"""
from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import Column, Date, Engine, Integer, String, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite

from shared.domain.contract import TEXT_MAX, Contract
from shared.projections.tracking import metadata, read_position, save_position
from shared.store import EventStore

NAME = "contract_list"

contracts = Table(
    "contract_list",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("customer", String(TEXT_MAX), nullable=False, index=True),
    Column("level", String(TEXT_MAX), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_to", Date, nullable=False),
    Column("warranty_until", Date),
    Column("region", String(TEXT_MAX)),
    Column("zone", String(16)),
    Column("dedicated_engineer", String(TEXT_MAX)),
    Column("version", Integer, nullable=False),
)


def _row(contract: Contract) -> dict[str, Any]:
    return {
        "code": contract.code, "customer": contract.customer, "level": contract.level,
        "tier": contract.tier.value, "valid_from": contract.valid_from, "valid_to": contract.valid_to,
        "warranty_until": contract.warranty_until, "region": contract.region,
        "zone": contract.zone.value if contract.zone else None,
        "dedicated_engineer": contract.dedicated_engineer, "version": contract.version,
    }


class ContractListProjection:
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
            evolved: dict[UUID, Contract] = {}
            for notification in notifications:
                event = self.store.decode(notification)
                if isinstance(event, Contract.Event):
                    evolved[event.originator_id] = self._evolve(evolved.get(event.originator_id), event)
            for contract in evolved.values():
                row = _row(contract)
                upsert = self._insert(contracts).values(row)
                conn.execute(upsert.on_conflict_do_update(index_elements=["code"], set_=row))
            save_position(conn, NAME, notifications[-1].id)
            return len(notifications)

    def _evolve(self, contract: Contract | None, event: Contract.Event) -> Contract:
        # The batch may start in the middle of a stream: begin from the stored state before it.
        if contract is None and event.originator_version > 1:
            contract = self.store.repository.get(event.originator_id, version=event.originator_version - 1)
        return event.mutate(contract)

    def by_customer(self, customer: str, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One customer's contracts, ordered by code, and how many there are in all."""
        where = contracts.c.customer == customer
        with self.engine.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(contracts).where(where)) or 0
            rows = conn.execute(
                select(contracts).where(where).order_by(contracts.c.code).limit(limit).offset(offset)
            ).mappings().all()
        return [dict(r) for r in rows], total
