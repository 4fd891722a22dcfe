"""The contracts API: register or amend a service contract with PUT, read one, and
list a customer's contracts. Routes are thin: parse, call the contract book (or
the contract list read model), shape the answer.

No `from __future__ import annotations` here: the routes are defined inside
`contracts_router` and their annotations use its local dependency, which FastAPI
could not resolve from postponed (string) annotations.
"""
import re
from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, BeforeValidator, Field

from services.intake.access import Gate
from services.intake.schemas import Name, Offset, Strict
from shared.contracts import ContractBook
from shared.domain.contract import CODE_PATTERN, DEFAULT_TIME_ZONE, ISO_DATE_PATTERN, Contract, Tier, Zone
from shared.domain.errors import ContractNotFound
from shared.projections.contract_list import ContractListProjection

_ISO_DATE = re.compile(ISO_DATE_PATTERN)


def _iso_date(value: object) -> object:
    # Pydantic would also take Unix timestamps and date-times; a term is a whole local day.
    if isinstance(value, str) and _ISO_DATE.match(value):
        return value
    raise ValueError("expected an ISO date, YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Code = Annotated[str, Path(pattern=CODE_PATTERN, description="The contract code, e.g. K-2026-017.")]


class ContractTerms(Strict):
    """All of a contract's terms: a PUT replaces them (an omitted optional term is reset)."""

    customer: Name
    level: Name = Field(description="Service level of the SLA policy, e.g. standard (5×8) or premium (7×24).")
    valid_from: IsoDate = Field(description="First day covered, a local date in time_zone.")
    valid_to: IsoDate = Field(description="Last day covered (inclusive); outside the period nothing is promised.")
    tier: Tier = Tier.NORMAL
    warranty_until: IsoDate | None = Field(None, description="Last day of free (warranty) work; none: all billable.")
    region: Name | None = Field(None, description="e.g. 陕南, 关中, 陕北, or a city such as 汉中.")
    zone: Zone | None = Field(None, description="Where the site lies, for on-site targets.")
    dedicated_engineer: Name | None = Field(None, description="The engineer named by the contract (专人专线).")
    time_zone: Name = Field(DEFAULT_TIME_ZONE, description="IANA zone the dates are local to.")


class ContractRead(BaseModel):
    id: UUID
    code: str
    version: int
    customer: str
    level: str
    valid_from: date
    valid_to: date
    tier: Tier
    warranty_until: date | None
    region: str | None
    zone: Zone | None
    dedicated_engineer: str | None
    time_zone: str
    registered_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, contract: Contract) -> "ContractRead":
        return cls(
            id=contract.id, code=contract.code, version=contract.version,
            registered_at=contract.created_on, updated_at=contract.modified_on, **asdict(contract.terms),
        )


def contracts_router(
    book: ContractBook,
    contract_list: ContractListProjection,
    gate: Gate,
) -> APIRouter:
    """The contract routes. Admins write contracts; an integration key reads its own customers' only."""
    router = APIRouter(prefix="/v1/contracts", tags=["contracts"])
    Ctx = gate.context("contracts:write")
    Reader = gate.context("contracts:read")

    @router.put(
        "/{code}", response_model=ContractRead, responses={201: {"model": ContractRead, "description": "Registered"}}
    )
    def put_contract(code: Code, body: ContractTerms, ctx: Ctx, response: Response) -> ContractRead:
        """Register the contract (201 + Location) or amend it (200). Only the terms that
        changed are recorded; a PUT that changes nothing records nothing."""
        contract, created = book.put(code, body.model_dump(), actor=ctx.actor, correlation_id=ctx.correlation_id)
        if created:
            response.status_code = 201
            response.headers["Location"] = f"/v1/contracts/{code}"
        return ContractRead.of(contract)

    @router.get("/{code}", response_model=ContractRead)
    def get_contract(code: Code, ctx: Reader) -> ContractRead:
        contract = book.get(code)
        if not ctx.principal.serves(contract.customer):
            raise ContractNotFound(code)
        return ContractRead.of(contract)

    @router.get("")
    def list_contracts(
        ctx: Reader,
        customer: Annotated[str, Query(min_length=1, max_length=200)],
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """One customer's contracts from the contract list read model (it trails the store
        by milliseconds), ordered by code."""
        ctx.serve(customer)
        rows, total = contract_list.by_customer(customer, limit, offset)
        return {"contracts": rows, "total": total, "limit": limit, "offset": offset}

    return router
