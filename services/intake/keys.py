"""The API keys API (admin only): issue a key for a client, list and read keys, revoke
one. The key itself is in one answer only, the one that issues it.

No `from __future__ import annotations`, as in contracts.py: FastAPI reads the route
annotations of functions defined inside `keys_router`.
"""
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from services.intake.access import Gate
from services.intake.schemas import Name, Offset, Strict
from shared.domain.api_key import CUSTOMERS_MAX, ApiKey, Role
from shared.keys import Keyring
from shared.projections.key_list import KeyListProjection


class KeyCreate(Strict):
    name: Name = Field(description="Who holds the key, e.g. zabbix-acme or li.wei; recorded as the actor's id.")
    role: Role
    customers: list[Name] = Field([], max_length=CUSTOMERS_MAX, description="integration keys: the customers served.")
    engineer: Name | None = Field(None, description="engineer keys: the engineer's id, e.g. E-017.")
    rate_per_second: float | None = Field(
        None, gt=0, le=100_000, description="Requests a second this key may make; default: the service's."
    )


class KeyRevoke(Strict):
    reason: Name


class KeyRead(BaseModel):
    id: UUID
    name: str
    role: Role
    customers: list[str]
    engineer: str | None
    rate_per_second: float | None
    issued_at: datetime
    issued_by: dict[str, str]
    revoked_at: datetime | None
    revoked_reason: str | None
    version: int

    @classmethod
    def of(cls, key: ApiKey) -> "KeyRead":
        return cls(
            id=key.id, name=key.name, role=key.role, customers=list(key.customers), engineer=key.engineer,
            rate_per_second=key.rate_per_second, issued_at=key.created_on, issued_by=key.issued_by,
            revoked_at=key.revoked_at, revoked_reason=key.revoked_reason, version=key.version,
        )


class KeyWithSecret(KeyRead):
    key: str = Field(description="The key for `Authorization: Bearer`. Shown this once; only its digest is kept.")


def keys_router(keyring: Keyring, key_list: KeyListProjection, gate: Gate) -> APIRouter:
    router = APIRouter(prefix="/v1/keys", tags=["keys"])
    Admin = gate.context("keys:manage")

    @router.post("", status_code=201, response_model=KeyWithSecret)
    def issue(body: KeyCreate, ctx: Admin, response: Response) -> KeyWithSecret:
        """Issue a key. The answer carries the key itself, which is never shown again."""
        key, secret = keyring.issue(
            name=body.name, role=body.role, customers=tuple(body.customers), engineer=body.engineer,
            rate_per_second=body.rate_per_second, actor=ctx.actor, correlation_id=ctx.correlation_id,
        )
        response.headers["Location"] = f"/v1/keys/{key.id}"
        return KeyWithSecret(**KeyRead.of(key).model_dump(), key=secret)

    @router.get("")
    def list_keys(
        ctx: Admin,
        role: Role | None = None,
        active: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Keys, newest first, from the key list read model (it trails the store by milliseconds)."""
        rows, total = key_list.query(role=role, active=active, limit=limit, offset=offset)
        return {"keys": rows, "total": total, "limit": limit, "offset": offset}

    @router.get("/{key_id}", response_model=KeyRead)
    def get_key(key_id: UUID, ctx: Admin) -> KeyRead:
        return KeyRead.of(keyring.get(key_id))

    @router.post("/{key_id}/revoke", response_model=KeyRead)
    def revoke(key_id: UUID, body: KeyRevoke, ctx: Admin) -> KeyRead:
        """Revoke for good: every service refuses the key from the next request on."""
        return KeyRead.of(keyring.revoke(key_id, reason=body.reason, actor=ctx.actor, correlation_id=ctx.correlation_id))

    return router
