"""The spare unit list: one row per unit with its state, for stock by model and
warehouse, overdue loans, and choosing a unit to reserve.

Rows are the SpareUnit aggregate's own state after each event, committed with the
position in the notification log. A reservation is checked on the unit's own
stream, so a row trailing the store can cost a retry, never a unit promised twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, Integer, String, Table, func, select

from shared.dispatching import UnitOption
from shared.domain.engineer import TEXT_MAX
from shared.domain.spare_unit import SpareUnit, UnitState
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata
from shared.read_db import reading

NAME = "spare_unit_list"

units = Table(
    "spare_unit_list",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("serial", String(TEXT_MAX), nullable=False),
    Column("model", String(TEXT_MAX), nullable=False, index=True),
    Column("warehouse", String(TEXT_MAX), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("ticket_id", String(36)),
    Column("ticket_number", String(32)),
    Column("return_by", DateTime(timezone=True)),  # always UTC (SQLite keeps no offset)
    Column("overdue", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
)


@dataclass(frozen=True)
class UnitFilter:
    model: str | None = None
    warehouse: str | None = None
    state: str | None = None
    overdue: bool | None = None
    limit: int = 50
    offset: int = 0


def _utc(instant: datetime | None) -> datetime | None:
    if instant is None:
        return None
    return instant.replace(tzinfo=timezone.utc) if instant.tzinfo is None else instant.astimezone(timezone.utc)


class SpareUnitListProjection(AggregateRows):
    name = NAME
    table = units
    key = "id"
    events = SpareUnit.Event

    def row(self, unit: SpareUnit) -> dict[str, Any]:
        return {
            "id": unit.code, "serial": unit.record.serial, "model": unit.record.model,
            "warehouse": unit.record.warehouse, "state": str(unit.state), "ticket_id": unit.ticket_id,
            "ticket_number": unit.ticket_number, "return_by": _utc(unit.return_by), "overdue": unit.overdue,
            "version": unit.version,
        }

    def query(self, where: UnitFilter) -> tuple[list[dict[str, Any]], int]:
        conditions = [
            getattr(units.c, name) == value
            for name in ("model", "warehouse", "state", "overdue")
            if (value := getattr(where, name)) is not None
        ]
        with reading(self.engine) as conn:
            total = conn.scalar(select(func.count()).select_from(units).where(*conditions)) or 0
            rows = conn.execute(
                select(units).where(*conditions).order_by(units.c.id).limit(where.limit).offset(where.offset)
            ).mappings().all()
        return [dict(r) | {"return_by": _utc(r["return_by"])} for r in rows], total

    def stock(self, model: str | None = None, warehouse: str | None = None) -> list[dict[str, Any]]:
        """Units per model, warehouse and state."""
        conditions = [c == v for c, v in ((units.c.model, model), (units.c.warehouse, warehouse)) if v is not None]
        statement = (
            select(units.c.model, units.c.warehouse, units.c.state, func.count().label("units"))
            .where(*conditions).group_by(units.c.model, units.c.warehouse, units.c.state)
            .order_by(units.c.model, units.c.warehouse, units.c.state)
        )
        with reading(self.engine) as conn:
            return [dict(r) for r in conn.execute(statement).mappings()]

    def available(self, model: str) -> list[UnitOption]:
        statement = select(units.c.id, units.c.warehouse).where(
            units.c.model == model, units.c.state == UnitState.AVAILABLE.value
        )
        with reading(self.engine) as conn:
            return [UnitOption(code, warehouse) for code, warehouse in conn.execute(statement)]

    def stocks_model(self, model: str) -> bool:
        """Whether any unit of the model is registered, whatever its state."""
        with reading(self.engine) as conn:
            return conn.scalar(select(func.count()).select_from(units).where(units.c.model == model)) > 0

    def loans_due(self, now: datetime) -> list[str]:
        """Units on loan past their return-by instant whose overdue event is not yet raised."""
        statement = select(units.c.id).where(
            units.c.state == UnitState.INSTALLED.value, units.c.overdue.is_(False), units.c.return_by < _utc(now)
        )
        with reading(self.engine) as conn:
            return list(conn.scalars(statement))
