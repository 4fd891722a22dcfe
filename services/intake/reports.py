"""The reports API: the SLA compliance report of a customer's month, read from its
projection (kept by the projector; it trails the store by milliseconds).

No `from __future__ import annotations`, as in contracts.py: FastAPI reads the route
annotations of functions defined inside `reports_router`.
"""
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.intake.access import Gate
from shared.projections.sla_compliance import MONTH_PATTERN, SlaComplianceProjection


class TargetCompliance(BaseModel):
    target: str
    met: int
    breached: int
    open: int
    stopped: int  # closed or cancelled before it was met
    compliance: float | None  # met / (met + breached); none when nothing is decided yet
    breached_tickets: list[str]


class SlaReport(BaseModel):
    customer: str
    month: str
    time_zone: str
    tickets: int
    committed: int  # tickets with an SLA commitment
    targets: list[TargetCompliance]


def reports_router(sla_compliance: SlaComplianceProjection, gate: Gate) -> APIRouter:
    router = APIRouter(prefix="/v1/reports", tags=["reports"])
    Reader = gate.context("reports:read")

    @router.get("/sla", response_model=SlaReport)
    def sla_report(
        ctx: Reader,
        customer: Annotated[str, Query(min_length=1, max_length=200)],
        month: Annotated[str, Query(pattern=MONTH_PATTERN, description="YYYY-MM of the tickets' receipt, local time.")],
    ) -> dict[str, Any]:
        """Per SLA target: how many of the customer's tickets received that month met it,
        breached it, are still open on it, or were stopped before it was met."""
        ctx.serve(customer)
        return sla_compliance.report(customer, month)

    return router
