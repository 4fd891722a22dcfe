"""The intake API (FastAPI). Routes are thin: parse, call the ticket desk, shape the answer.

The store is synchronous, so routes are plain `def` and FastAPI runs them in its
thread pool; opening a ticket, the route a storm of reports hits, is a coroutine that
hands its request to the desk's batch and holds no thread while it is saved.
"""
from collections.abc import Callable
from typing import Annotated, Any, Literal


from eventsourcing.application import AggregateNotFoundError
from fastapi import FastAPI, Header, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, StringConstraints

from services.intake import limits, problems, schemas
from services.intake.access import Context, Gate
from services.intake.contracts import contracts_router
from services.intake.keys import keys_router
from services.intake.policy import policy_router
from services.intake.reports import reports_router
from services.intake.webhooks import webhooks_router
from shared import serving
from shared.contracts import ContractBook
from shared.audit import FeedFilter, TimelineLine, incident_report, read_feed, report_markdown, timeline, version_at
from shared.desk import IdempotencyToken, TicketDesk
from shared.domain.engineer import Engineer, engineer_id
from shared.domain.entitlement import entitlement
from shared.domain.errors import TicketNotFound
from shared.domain.ticket import Ticket
from shared.event_format import history_entry
from shared.integrity import Verdict, verify_store, verify_stream
from shared.projections.contract_list import ContractListProjection
from shared.projections.key_list import KeyListProjection
from shared.projections.sla_compliance import SlaComplianceProjection
from shared.projections.ticket_list import TicketFilter, TicketListProjection
from shared.sla.policy import CALLBACK, Policy
from shared.webhooks import Webhooks
from shared.sla.targets import Facts, due_from, plan_targets
from shared.store import EventStore

TicketRef = Annotated[str, Path(max_length=64, description="Ticket id (UUID) or number (T-2026-000123).")]

# The ticket commands: path, aggregate method, body model, what it means.
COMMANDS: list[tuple[str, str, type[schemas.Command], str]] = [
    ("acknowledge", "acknowledge", schemas.Acknowledge, "First response: contact made and a plan committed."),
    ("comments", "comment", schemas.AddComment, "Add a comment (internal or visible to the customer)."),
    ("severity", "change_severity", schemas.ChangeSeverity, "Change the severity, with a reason."),
    ("await-customer", "await_customer", schemas.AwaitCustomer, "Wait for the customer (pauses the SLA clocks)."),
    ("customer-response", "record_customer_response", schemas.RecordCustomerResponse, "The customer answered."),
    ("arrive", "arrive", schemas.Arrive, "The engineer arrived on site."),
    ("resolve", "resolve", schemas.Resolve, "The fault is fixed."),
    ("confirm", "confirm", schemas.Confirm, "The customer confirmed the result (optionally with satisfaction)."),
    ("reopen", "reopen", schemas.Reopen, "Not fixed after all: a new resolution cycle."),
    ("close", "close", schemas.Close, "Close a resolved or confirmed ticket."),
    ("cancel", "cancel", schemas.Cancel, "Cancel an active ticket."),
    ("visit-request", "request_visit", schemas.RequestVisit, "A visit is needed: the on-site target applies from now."),
    ("callback", "record_callback", schemas.RecordCallback, "The customer was called back after the resolution."),
    ("escalate", "escalate", schemas.Escalate, "Escalate by hand, e.g. a complaint about the engineer."),
]


def create_app(
    desk: TicketDesk,
    ticket_list: TicketListProjection,
    policy: Policy,
    contracts: ContractBook,
    contract_list: ContractListProjection,
    sla_compliance: SlaComplianceProjection,
    webhooks: Webhooks,
    gate: Gate,
    key_list: KeyListProjection,
    *,
    max_body_bytes: int = limits.MAX_BODY_BYTES,
    ready: Callable[[], dict[str, bool]] = lambda: {},
    opentelemetry: bool = False,
) -> FastAPI:
    app = FastAPI(
        title="Ticketing: after-sales technical support",
        version="1.0",
        description="Open incidents, run ticket commands, and read any ticket's full event history. "
        "Every route but /healthz and /readyz needs an API key: `Authorization: Bearer <key>`.",
        responses=problems.RESPONSES,
        telemetry=serving.telemetry(opentelemetry),
    )
    problems.install(app)
    limits.install(app, max_body_bytes)
    Reader = gate.context("tickets:read")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz(response: Response) -> dict[str, Any]:
        checks = {"store": _store_reachable(desk)} | ready()
        response.status_code = 200 if all(checks.values()) else 503
        return {"status": "ready" if response.status_code == 200 else "unavailable", "checks": checks}

    @app.post("/v1/tickets", status_code=201, tags=["tickets"], response_model=schemas.TicketRead)
    async def open_ticket(
        body: schemas.TicketCreate,
        ctx: gate.context("tickets:open"),  # type: ignore[valid-type]
        response: Response,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    ) -> schemas.TicketRead:
        """Open a ticket. A retry by the same key with the same `Idempotency-Key` (or, without
        one, the same `source.system` + `source.reference`) returns the first ticket; with
        another body, 422. An integration key opens tickets for its own customers only."""
        ctx.serve(body.customer)
        system = body.source.system if body.source else ""
        # Idempotency is per key: one client's keys can never reach another client's tickets.
        scope = f"{ctx.principal.key_id}/{system}"
        token = None
        if idempotency_key is not None:
            token = IdempotencyToken(scope=scope, value=idempotency_key, field="Idempotency-Key")
        elif body.source and body.source.reference:
            token = IdempotencyToken(scope=scope, value=body.source.reference, field="source.reference")
        opened = await desk.open_async(details=body.details(), token=token, actor=ctx.actor,
                                       correlation_id=ctx.correlation_id)
        response.headers["Location"] = f"/v1/tickets/{opened.ticket.id}"
        if opened.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return as_recorded(opened.ticket)

    @app.get("/v1/tickets", tags=["tickets"])
    def list_tickets(
        ctx: Reader,  # type: ignore[valid-type]
        status: schemas.Status | None = None,
        severity: schemas.Severity | None = None,
        customer: Annotated[str | None, Query(max_length=200)] = None,
        region: Annotated[str | None, Query(max_length=200)] = None,
        engineer: Annotated[str | None, Query(max_length=200, description="The lead engineer.")] = None,
        escalation_level: Annotated[Literal["L1", "L2", "L3", "L4"] | None, Query()] = None,
        breached: Annotated[bool | None, Query(description="Any SLA target breached.")] = None,
        received_from: schemas.Instant | None = None,
        received_until: schemas.Instant | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: schemas.Offset = 0,
    ) -> dict[str, Any]:
        """The ticket list read model: newest first. It trails the store by milliseconds.
        A key sees only its scope: its customers' tickets, or the tickets its engineer is on."""
        where = TicketFilter(
            status=status, severity=severity, customer=customer, region=region, engineer=engineer,
            escalation_level=escalation_level, breached=breached, received_from=received_from,
            received_until=received_until, limit=limit, offset=offset,
            customers=ctx.customers, ids=scoped_ids(ctx),
        )
        rows, total = ticket_list.query(where)
        return {"tickets": rows, "total": total, "limit": limit, "offset": offset}

    @app.get("/v1/tickets/{reference}", tags=["tickets"], response_model=schemas.TicketRead)
    def get_ticket(
        reference: TicketRef,
        ctx: Reader,  # type: ignore[valid-type]
        version: Annotated[int | None, Query(ge=1, le=schemas.INT64_MAX, description="The state it had at this version.")] = None,
        as_of: Annotated[schemas.Instant | None, Query(description="The state it had at this instant (RFC 3339).")] = None,
    ) -> schemas.TicketRead:
        """The ticket now, with each SLA target's state; with `version` or `as_of`, as it
        stood then (replayed from its events, SLA states computed at that instant)."""
        if version is not None and as_of is not None:
            raise RequestValidationError([{"loc": ("query", "as_of"), "type": "value_error",
                                           "msg": "give version or as_of, not both"}])
        if as_of is not None and as_of > desk.clock.now():
            # Not known yet; and SLA states are worked out day by day up to as_of, so a far
            # one would hold a worker for minutes.
            raise RequestValidationError([{"loc": ("query", "as_of"), "type": "value_error",
                                           "msg": "give an instant that has passed"}])
        ticket = ctx.ticket(desk, reference)
        if version is not None and version > ticket.version:
            # Replaying "up to" a version not yet recorded would pass the current state
            # off as that version's.
            raise RequestValidationError([{"loc": ("query", "version"), "type": "value_error",
                                           "msg": f"version {version} not recorded; the ticket is at version {ticket.version}"}])
        if as_of is not None:
            version = version_at(desk.history(ticket.id), as_of)
            if version is None:
                raise TicketNotFound(f"{reference} as of {as_of.isoformat()} (received later)")
            return schemas.TicketRead.of(desk.get(ticket.id, version=version), policy, as_of)
        if version is not None:
            return as_recorded(desk.get(ticket.id, version=version))
        return schemas.TicketRead.of(ticket, policy, desk.clock.now())

    @app.get("/v1/tickets/{reference}/events", tags=["tickets"], response_model=list[schemas.HistoryEntry])
    def ticket_history(
        reference: TicketRef,
        ctx: Reader,  # type: ignore[valid-type]
        after_version: Annotated[int, Query(ge=0, le=schemas.INT64_MAX, description="Page on: the last version you have.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> list[dict[str, Any]]:
        """The ticket's ordered history: every event with version, type, time, actor, hashes and
        data; a page of `limit` events after `after_version`."""
        ticket_id = ctx.ticket(desk, reference).id
        return [history_entry(e) for e in desk.store.events.get(ticket_id, gt=after_version or None, limit=limit)]

    @app.get("/v1/events", tags=["audit"], response_model=schemas.Feed)
    def global_feed(
        ctx: gate.context("feed:read"),  # type: ignore[valid-type]
        after: Annotated[int, Query(ge=0, le=schemas.INT64_MAX, description="Position to continue after (0 = from the start).")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        type: Annotated[list[Annotated[str, StringConstraints(max_length=200)]] | None,
                        Query(max_length=20, description="Event types; `sla.*` matches a family.")] = None,
        ticket: Annotated[str | None, Query(max_length=64, description="One ticket (id or number).")] = None,
        customer: Annotated[str | None, Query(max_length=200)] = None,
        since: schemas.Instant | None = None,
        until: schemas.Instant | None = None,
    ) -> dict[str, Any]:
        """Every recorded event (tickets, contracts, ...) in the order it was recorded,
        optionally filtered. `next_after` is where reading stopped, matched or not, so
        an integrator resumes from it without missing or repeating anything. An
        integration key reads only its customers' tickets' events."""
        streams = None if ticket is None else frozenset({ctx.ticket(desk, ticket).id})
        customers = ctx.customers
        if customer is not None:
            customers = frozenset({customer}) & (customers if customers is not None else {customer})
        where = FeedFilter(types=tuple(type or ()), streams=streams, since=since, until=until, customers=customers)
        events, next_after = read_feed(desk.store, after, limit, where)
        return {"events": events, "next_after": next_after}

    @app.get("/v1/tickets/{reference}/verify", tags=["audit"], response_model=Verdict)
    def verify_ticket(reference: TicketRef, ctx: Reader) -> Verdict:  # type: ignore[valid-type]
        """Recompute the ticket's hash chain from the store; names the first broken link."""
        return verify_stream(desk.store, ctx.ticket(desk, reference).id)

    @app.get("/v1/verify", tags=["audit"], response_model=Verdict)
    def verify_everything(ctx: gate.context("store:verify")) -> Verdict:  # type: ignore[valid-type]
        """Recompute every stream's hash chain, in recorded order."""
        return verify_store(desk.store)

    @app.get("/v1/tickets/{reference}/timeline", tags=["audit"], response_model=list[TimelineLine])
    def ticket_timeline(reference: TicketRef, ctx: Reader) -> list[Any]:  # type: ignore[valid-type]
        """The history in plain words, each SLA target's outcome stated where it was decided."""
        return timeline(desk.history(ctx.ticket(desk, reference).id), policy, desk.zone)

    @app.get("/v1/tickets/{reference}/report", tags=["audit"], responses={200: {"content": {"text/markdown": {}}}})
    def ticket_report(
        reference: TicketRef,
        ctx: Reader,  # type: ignore[valid-type]
        format: Annotated[Literal["json", "markdown"], Query()] = "json",
    ) -> Any:
        """The incident report for the customer (seed 004): timeline, SLA outcome per target, engineers."""
        ticket = ctx.ticket(desk, reference)
        report = incident_report(ticket, desk.history(ticket.id), policy, desk.zone, desk.clock.now())
        if format == "markdown":
            return PlainTextResponse(report_markdown(report, desk.zone), media_type="text/markdown; charset=utf-8")
        return report

    @app.post("/v1/sla/quote", tags=["sla"], response_model=schemas.Quote)
    def quote(body: schemas.QuoteRequest, ctx: gate.context("sla:quote")) -> schemas.Quote:  # type: ignore[valid-type]
        """What a hotline agent tells the customer: the due instant of every target."""
        start = body.start or desk.clock.now()
        if body.contract is not None:
            contract = contracts.find(body.contract)
            visible = contract if contract is not None and ctx.principal.serves(contract.customer) else None
            owed = entitlement(visible, start, contract_code=body.contract)
            terms = Facts(str(body.severity), str(body.category), owed.level or "", owed.tier, body.zone or owed.zone, owed.billable)
        else:
            owed = None
            terms = Facts(str(body.severity), str(body.category), body.level or "", body.tier, body.zone)
        if owed is not None and not owed.committed:
            return schemas.Quote(committed=False, reason=owed.reason, policy_version=policy.version, level=None,
                                 severity=None, raised_by=[], on_site_owed=False, unverified_years=[], targets=[])
        if terms.level not in policy.levels:
            raise RequestValidationError([{
                "loc": ("body", "level"), "type": "value_error",
                "msg": f"give a contract or a service level, one of {sorted(policy.levels)}",
            }])
        plan = plan_targets(policy, terms, start)
        return schemas.Quote(
            committed=True, reason=None, policy_version=plan.policy_version, level=plan.level, severity=plan.severity,
            raised_by=list(plan.raised_by), on_site_owed=plan.on_site_by_default,
            unverified_years=list(plan.unverified_years),
            targets=[
                schemas.QuotedTarget(target=t.target, rule=t.rule, calendar=t.calendar, seconds=t.seconds,
                                     due_at=None if t.target == CALLBACK else due_from(policy, t, start))
                for t in plan.targets
            ],
        )

    def as_recorded(ticket: Ticket) -> schemas.TicketRead:
        # SLA state at the ticket's last event: a stored response stays identical on replay.
        return schemas.TicketRead.of(ticket, policy, ticket.modified_on)

    def scoped_ids(ctx: Context) -> frozenset[str] | None:
        """An engineer key lists the tickets its engineer carries now; other keys, None (no limit by id)."""
        if ctx.principal.engineer is None:
            return None
        return frozenset(_carried_by(desk.store, ctx.principal.engineer))

    for path, command, body_model, summary in COMMANDS:
        app.post(
            f"/v1/tickets/{{reference}}/{path}",
            tags=["ticket commands"],
            summary=summary,
            response_model=schemas.TicketRead,
        )(_command_route(desk, command, body_model, as_recorded, gate))
    # After the ticket routes: a request is matched against routes in order, and a storm
    # of reports is matched against POST /v1/tickets.
    app.include_router(contracts_router(contracts, contract_list, gate))
    app.include_router(reports_router(sla_compliance, gate))
    app.include_router(webhooks_router(webhooks, gate))
    app.include_router(keys_router(gate.keyring, key_list, gate))
    app.include_router(policy_router(policy, gate))
    return app


def _command_route(
    desk: TicketDesk,
    command: str,
    body_model: type[BaseModel],
    respond: Callable[[Ticket], schemas.TicketRead],
    gate: Gate,
) -> Callable[..., schemas.TicketRead]:
    def run(reference, body, ctx):  # type: ignore[no-untyped-def]  # annotated below, per command
        arguments = body.model_dump(exclude={"expected_version"})
        if "engineer" in arguments:
            ctx.act_as(arguments["engineer"])
        ticket = desk.act(
            reference, command, expected_version=body.expected_version, allowed=ctx.principal.sees,
            actor=ctx.actor, correlation_id=ctx.correlation_id, **arguments,
        )
        return respond(ticket)

    run.__name__ = command
    run.__annotations__ = {
        "reference": TicketRef, "body": body_model, "ctx": gate.context(f"tickets:{command}"),
        "return": schemas.TicketRead,
    }
    return run


def _carried_by(store: EventStore, engineer: str) -> list[str]:
    """The ids of the tickets an engineer carries now, from their own stream."""
    try:
        found = store.repository.get(engineer_id(engineer))
    except AggregateNotFoundError:
        return []
    return list(found.tickets) if isinstance(found, Engineer) else []


def _store_reachable(desk: TicketDesk) -> bool:
    try:
        desk.store.recorder.max_notification_id()
    except Exception:  # noqa: BLE001 - any failure here means "not ready", which is the answer
        return False
    return True
