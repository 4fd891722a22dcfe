"""The key list: one row per API key (never the key, nor its digest), for `GET /v1/keys`
and `ticketctl keys list`. Kept by the projector like the other lists."""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Integer, String, Table, func, select

from shared.domain.api_key import NAME_MAX, ApiKey
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata
from shared.read_db import reading

keys = Table(
    "key_list",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(NAME_MAX), nullable=False),
    Column("role", String(16), nullable=False, index=True),
    Column("customers", JSON, nullable=False),
    Column("engineer", String(64)),
    Column("rate_per_second", Float),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("issued_by", JSON, nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_reason", String(NAME_MAX)),
    Column("version", Integer, nullable=False),
)


class KeyListProjection(AggregateRows):
    name = "key_list"
    table = keys
    key = "id"
    events = ApiKey.Event

    def row(self, key: ApiKey) -> dict[str, Any]:
        return {
            "id": str(key.id), "name": key.name, "role": str(key.role), "customers": list(key.customers),
            "engineer": key.engineer, "rate_per_second": key.rate_per_second, "issued_at": key.created_on,
            "issued_by": key.issued_by, "revoked_at": key.revoked_at, "revoked_reason": key.revoked_reason,
            "version": key.version,
        }

    def query(self, *, role: str | None, active: bool | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Keys, newest first, and how many match in all."""
        conditions = []
        if role is not None:
            conditions.append(keys.c.role == role)
        if active is not None:
            conditions.append(keys.c.revoked_at.is_(None) if active else keys.c.revoked_at.is_not(None))
        page = select(keys).where(*conditions).order_by(keys.c.issued_at.desc(), keys.c.id).limit(limit).offset(offset)
        with reading(self.engine) as conn:
            total = conn.execute(select(func.count()).select_from(keys).where(*conditions)).scalar_one()
            return [dict(r) for r in conn.execute(page).mappings()], total
