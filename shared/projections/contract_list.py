"""The contract list: one row per contract, for `GET /v1/contracts?customer=`.

Rows are the Contract aggregate's own state after each event (an Amended event
carries only the changed terms, so the row is the evolved aggregate, never a
patch), and each batch is committed with its position in the notification log.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Date, Integer, String, Table, func, select

from shared.domain.contract import TEXT_MAX, Contract
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata
from shared.read_db import reading

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


class ContractListProjection(AggregateRows):
    name = NAME
    table = contracts
    key = "code"
    events = Contract.Event

    def row(self, contract: Contract) -> dict[str, Any]:
        return _row(contract)

    def by_customer(self, customer: str, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One customer's contracts, ordered by code, and how many there are in all."""
        where = contracts.c.customer == customer
        with reading(self.engine) as conn:
            total = conn.scalar(select(func.count()).select_from(contracts).where(where)) or 0
            rows = conn.execute(
                select(contracts).where(where).order_by(contracts.c.code).limit(limit).offset(offset)
            ).mappings().all()
        return [dict(r) for r in rows], total
