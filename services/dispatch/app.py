"""The dispatch API (FastAPI): engineers and spare units, who can take a ticket now,
stock by model and warehouse, and what engineers do on a ticket. Routes are thin:
parse, call the roster, the stock, the logistics or the engineers' actions, shape
the answer. Errors are the intake API's RFC 9457 problems.

The store is synchronous, so routes are plain `def` and FastAPI runs them in its
thread pool.
"""
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel

from services.dispatch import schemas
from services.intake import problems
from services.intake import limits
from services.intake.access import Context, Gate
from services.intake.app import TicketRef, _store_reachable
from services.intake.schemas import Instant, Offset
from shared import serving
from shared.dispatching import Need, Rota, branches_serving, duty, rank, region_of, required_skill, service_instant
from shared.domain.contract import CODE_PATTERN
from shared.domain.engineer import Engineer
from shared.domain.spare_unit import UnitState
from shared.domain.ticket import Severity
from shared.projections.engineer_list import EngineerFilter
from shared.projections.spare_unit_list import UnitFilter

if TYPE_CHECKING:
    from services.dispatch.wiring import Dispatch

EngineerId = Annotated[str, Path(pattern=CODE_PATTERN, description="The engineer's id, e.g. E-017.")]
UnitId = Annotated[str, Path(pattern=CODE_PATTERN, description="The spare unit's asset tag, e.g. SP-HZ-001.")]
Limit = Annotated[int, Query(ge=1, le=500)]
Filter = Annotated[str | None, Query(min_length=1, max_length=200)]

# Spare unit steps: path, SpareLogistics method, body, what it means.
UNIT_STEPS: list[tuple[str, str, type[BaseModel], str]] = [
    ("ship", "ship", schemas.Ship, "The reserved unit leaves its warehouse for the customer."),
    ("install", "install", schemas.Install, "Installed at the customer, on loan until return_by."),
    ("return", "return_to_stock", schemas.Note, "Back at its warehouse (the customer's own unit is repaired)."),
    ("convert", "convert", schemas.Convert, "The loan becomes permanent: sold, or kept as the replacement."),
    ("restock", "restock", schemas.Note, "Checked after its return: available again."),
    ("retire", "retire", schemas.Retire, "Taken out of the stock for good."),
]

# Engineers' actions on a ticket: path, EngineerActions method, body, what it means.
TICKET_ACTIONS: list[tuple[str, str, type[BaseModel], str]] = [
    ("accept", "accept", schemas.Acting, "The engineer accepts the assignment."),
    ("decline", "decline", schemas.WithReason, "The engineer declines; dispatch assigns the next best."),
    ("depart", "depart", schemas.Depart, "The engineer sets off for the site."),
    ("arrive", "arrive", schemas.Arrive, "The engineer is on site (meets the on-site target)."),
    ("hand-back", "hand_back", schemas.WithReason, "The engineer gives the ticket back; dispatch reassigns it."),
    ("complaint", "complain", schemas.Complaint, "The customer complains about an engineer; someone else of at "
                                                 "least their level is sent."),
]


def create_app(parts: "Dispatch", *, max_body_bytes: int = limits.MAX_BODY_BYTES, opentelemetry: bool = False) -> FastAPI:
    app = FastAPI(
        title="Ticketing dispatch: engineers and spare units",
        version="1.0",
        description="Engineers, duty rotas and spare units; who can take a ticket now; engineers' actions on tickets. "
        "Every route but /healthz and /readyz needs an API key: `Authorization: Bearer <key>`.",
        responses=problems.RESPONSES,
        telemetry=serving.telemetry(opentelemetry),
    )
    problems.install(app)
    limits.install(app, max_body_bytes)
    rules = parts.rules
    gate = parts.gate
    Writer = gate.context("roster:write")
    Reader = gate.context("roster:read")

    def engineer_read(engineer: Engineer) -> schemas.EngineerRead:
        p = engineer.profile
        on_duty = duty(rules, Rota(p.hours, p.on_call), parts.tickets.clock.now())
        return schemas.EngineerRead.of(engineer, region_of(rules, p.branch), on_duty)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz(response: Response) -> dict[str, Any]:
        checks = {"store": _store_reachable(parts.tickets)}
        response.status_code = 200 if all(checks.values()) else 503
        return {"status": "ready" if response.status_code == 200 else "unavailable", "checks": checks}

    # -- engineers ------------------------------------------------------------------

    @app.put("/v1/engineers/{code}", tags=["engineers"], response_model=schemas.EngineerRead,
             responses={201: {"model": schemas.EngineerRead, "description": "Registered"}})
    def put_engineer(code: EngineerId, body: schemas.EngineerProfile, ctx: Writer, response: Response) -> schemas.EngineerRead:
        """Register (201 + Location) or amend (200) an engineer; only what changed is recorded."""
        outcome = parts.roster.put(code, body.model_dump(), actor=ctx.actor, correlation_id=ctx.correlation_id)
        if outcome.created:
            response.status_code = 201
            response.headers["Location"] = f"/v1/engineers/{code}"
        return engineer_read(outcome.aggregate)

    @app.get("/v1/engineers/{code}", tags=["engineers"], response_model=schemas.EngineerRead)
    def get_engineer(code: EngineerId, ctx: Reader) -> schemas.EngineerRead:
        """The engineer from their own stream: profile, tickets carried, on duty now or not."""
        return engineer_read(parts.roster.get(code))

    @app.get("/v1/engineers", tags=["engineers"])
    def list_engineers(
        ctx: Reader, branch: Filter = None, region: Filter = None, level: schemas.Level | None = None, skill: Filter = None,
        active: bool | None = None, limit: Limit = 50, offset: Offset = 0,
    ) -> dict[str, Any]:
        """The engineer list (read model, caught up on each request), ordered by id."""
        branches = None if branch is None else {branch}
        if region is not None:
            in_region = {name for name in rules.cities if region_of(rules, name) == region}
            branches = in_region if branches is None else branches & in_region
        parts.reads.refresh()
        where = EngineerFilter(branches=branches, level=level, skill=skill, active=active, limit=limit, offset=offset)
        rows, total = parts.reads.engineers.query(where)
        return {"engineers": rows, "total": total, "limit": limit, "offset": offset}

    @app.get("/v1/availability", tags=["engineers"], response_model=schemas.Availability)
    def availability(
        ctx: Reader,
        city: Annotated[str, Query(min_length=1, max_length=200, description="The site's city, e.g. 汉中.")],
        severity: Severity = Severity.P1,
        service_level: Annotated[str | None, Query(min_length=1, max_length=200,
                                                   description="The contract's service level: premium (7×24) "
                                                               "counts on-call engineers at night.")] = None,
        model: Filter = None,
        at: Annotated[Instant | None, Query(description="Default: now.")] = None,
    ) -> schemas.Availability:
        """Who could take such a ticket (e.g. a P1 in 汉中 right now), best first, by the
        dispatch rules, with why the others could not."""
        parts.reads.refresh()
        instant, _ = service_instant(rules, service_level, at or parts.tickets.clock.now())
        region = region_of(rules, city)
        need = Need(city=city, region=region, skill=required_skill(rules, {"model": model}),
                    min_level=rules.min_level[str(severity)], at=instant)
        ranking = rank(rules, parts.reads.engineers.candidates(branches_serving(rules, city, region)), need)
        return schemas.Availability(
            at=instant, required_level=need.min_level, skill=need.skill, rejected=dict(ranking.rejected),
            engineers=[schemas.AvailableEngineer(id=m.candidate.id, name=m.candidate.name, branch=m.candidate.branch,
                                                 level=m.candidate.level, load=m.candidate.load,
                                                 max_tickets=m.candidate.max_tickets, rules=list(m.rules))
                       for m in ranking.matches],
        )

    # -- spare units ----------------------------------------------------------------

    @app.put("/v1/spare-units/{code}", tags=["spare units"], response_model=schemas.SpareUnitRead,
             responses={201: {"model": schemas.SpareUnitRead, "description": "Registered"}})
    def put_spare_unit(code: UnitId, body: schemas.UnitRecord, ctx: Writer, response: Response) -> schemas.SpareUnitRead:
        """Register (201) or amend (200) a unit's serial, model and warehouse; its state moves
        only through the steps below."""
        outcome = parts.stock.put(code, body.model_dump(), actor=ctx.actor, correlation_id=ctx.correlation_id)
        if outcome.created:
            response.status_code = 201
            response.headers["Location"] = f"/v1/spare-units/{code}"
        return schemas.SpareUnitRead.of(outcome.aggregate)

    @app.get("/v1/spare-units/{code}", tags=["spare units"], response_model=schemas.SpareUnitRead)
    def get_spare_unit(code: UnitId, ctx: Reader) -> schemas.SpareUnitRead:
        return schemas.SpareUnitRead.of(parts.stock.get(code))

    @app.get("/v1/spare-units", tags=["spare units"])
    def list_spare_units(
        ctx: Reader, model: Filter = None, warehouse: Filter = None, state: UnitState | None = None,
        overdue: Annotated[bool | None, Query(description="true: loans past their return-by instant.")] = None,
        limit: Limit = 50, offset: Offset = 0,
    ) -> dict[str, Any]:
        parts.reads.refresh()
        where = UnitFilter(model=model, warehouse=warehouse, state=state, overdue=overdue, limit=limit, offset=offset)
        rows, total = parts.reads.units.query(where)
        return {"spare_units": rows, "total": total, "limit": limit, "offset": offset}

    @app.get("/v1/stock", tags=["spare units"])
    def stock(ctx: Reader, model: Filter = None, warehouse: Filter = None) -> dict[str, Any]:
        """Units per model and warehouse, counted by state."""
        parts.reads.refresh()
        counts: dict[tuple[str, str], dict[str, Any]] = {}
        for row in parts.reads.units.stock(model, warehouse):
            entry = counts.setdefault((row["model"], row["warehouse"]),
                                      {"model": row["model"], "warehouse": row["warehouse"]} | {s.value: 0 for s in UnitState})
            entry[row["state"]] = row["units"]
        return {"stock": list(counts.values())}

    for path, method, body_model, summary in UNIT_STEPS:
        app.post(f"/v1/spare-units/{{code}}/{path}", tags=["spare units"], summary=summary,
                 response_model=schemas.SpareUnitRead)(_unit_step(getattr(parts.spares, method), body_model, gate))

    # -- engineers on tickets -------------------------------------------------------

    @app.get("/v1/tickets/{reference}/dispatch", tags=["ticket dispatch"], response_model=schemas.TicketDispatch)
    def ticket_dispatch(reference: TicketRef, ctx: gate.context("tickets:read")) -> schemas.TicketDispatch:
        """Who is on the ticket and which spare units concern it."""
        return schemas.TicketDispatch.of(ctx.ticket(parts.tickets, reference))

    @app.post("/v1/tickets/{reference}/spare-request", tags=["ticket dispatch"], response_model=schemas.ReservationRead)
    def request_spare(
        reference: TicketRef, body: schemas.SpareRequest, ctx: gate.context("dispatch:request_spare")
    ) -> schemas.ReservationRead:
        """An engineer on a P1/P2 ticket asks for a spare unit: the nearest available unit of
        the model is reserved, or the ticket records that there is none and what happens."""
        on_ticket(ctx, reference, body)
        outcome = parts.spares.request(reference, **body.model_dump(), actor=ctx.actor, correlation_id=ctx.correlation_id)
        return schemas.ReservationRead(reserved=outcome.unit, warehouse=outcome.warehouse, distance_km=outcome.distance_km,
                                       detail=outcome.detail, ticket=schemas.TicketDispatch.of(parts.tickets.get(reference)))

    def on_ticket(ctx: Context, reference: str, body: BaseModel) -> None:
        """The ticket is in the caller's scope, and an engineer key acts as its own engineer."""
        ctx.ticket(parts.tickets, reference)
        if isinstance(body, schemas.Acting):
            ctx.act_as(body.engineer)

    for path, method, body_model, summary in TICKET_ACTIONS:
        app.post(f"/v1/tickets/{{reference}}/{path}", tags=["ticket dispatch"], summary=summary,
                 response_model=schemas.TicketDispatch)(_ticket_action(getattr(parts.actions, method), body_model, gate, on_ticket))

    return app


def _unit_step(step: Callable[..., Any], body_model: type[BaseModel], gate: Gate) -> Callable[..., schemas.SpareUnitRead]:
    def run(code, body, ctx):  # type: ignore[no-untyped-def]  # annotated below, per step
        unit = step(code, **body.model_dump(), actor=ctx.actor, correlation_id=ctx.correlation_id)
        return schemas.SpareUnitRead.of(unit)

    run.__name__ = step.__name__
    run.__annotations__ = {"code": UnitId, "body": body_model, "ctx": gate.context("stock:move"),
                           "return": schemas.SpareUnitRead}
    return run


def _ticket_action(
    action: Callable[..., Any], body_model: type[BaseModel], gate: Gate, check: Callable[[Context, str, BaseModel], None]
) -> Callable[..., schemas.TicketDispatch]:
    def run(reference, body, ctx):  # type: ignore[no-untyped-def]  # annotated below, per action
        check(ctx, reference, body)
        ticket = action(reference, **body.model_dump(), actor=ctx.actor, correlation_id=ctx.correlation_id)
        return schemas.TicketDispatch.of(ticket)

    run.__name__ = action.__name__
    run.__annotations__ = {"reference": TicketRef, "body": body_model, "ctx": gate.context(f"dispatch:{action.__name__}"),
                           "return": schemas.TicketDispatch}
    return run
