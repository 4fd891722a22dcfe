"""The API's request and response bodies. Strict: unknown fields are refused and every
string has a length limit, so a client learns at once which field is wrong."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.domain.ticket import Category, Channel, Severity, Status, Ticket
from shared.sla.clocks import ClockState, view
from shared.sla.policy import Policy

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=20_000)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]

# Versions, positions and offsets are 64-bit integers in the store and the read models:
# a larger number could only fail there, so it is refused up front as invalid.
INT64_MAX = 2**63 - 1
Offset = Annotated[int, Query(ge=0, le=INT64_MAX, description="How many rows to skip.")]


def _in_years_used(instant: datetime) -> datetime:
    if not datetime(1970, 1, 1, tzinfo=timezone.utc) <= instant < datetime(3000, 1, 1, tzinfo=timezone.utc):
        raise ValueError("must be in the years 1970 to 2999")
    return instant


# An instant a client gives. Clocks and calendars add hours, days and time zones to it,
# which Python cannot do near the ends of its range (years 1 and 9999), so it is held to
# years in use.
Instant = Annotated[AwareDatetime, AfterValidator(_in_years_used)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        # JSON can carry "\u0000" and lone surrogates ("\ud800"); neither survives
        # PostgreSQL text or UTF-8, so they are refused here, naming the field.
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and ("\x00" in text or not text.isprintable() and not _encodable(text)):
                raise ValueError("must be valid Unicode text without NUL characters")
        return value


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class Site(Strict):
    city: Name = Field(description="City of the site, e.g. 汉中.")
    region: Short | None = None
    address: Short | None = None
    zone: Annotated[str, StringConstraints(pattern=r"^(in_city|suburban|out_of_town)$")] | None = Field(
        None, description="in_city, suburban or out_of_town: decides paid on-site targets."
    )


class Device(Strict):
    product: Short | None = None
    model: Short | None = None
    serial: Short | None = None


class Contact(Strict):
    name: Short | None = None
    phone: Short | None = None
    email: Short | None = None


class Source(Strict):
    system: Name = Field(description="The system that reported the incident, e.g. zabbix.")
    reference: Short | None = Field(None, description="That system's own id; a retry with it returns the same ticket.")


class TicketCreate(Strict):
    severity: Severity
    category: Category = Category.FAULT
    channel: Channel = Channel.API
    customer: Name
    contract: Short | None = None
    site: Site | None = None
    device: Device | None = None
    summary: Name
    description: Text = ""
    contact: Contact | None = None
    source: Source | None = None

    def details(self) -> dict[str, Any]:
        """The ticket's details as the Opened event records them (empty dicts, not nulls)."""
        data = self.model_dump(mode="json")
        return {k: (v if v is not None or k == "contract" else {}) for k, v in data.items()}


class Command(Strict):
    expected_version: int | None = Field(None, ge=1, description="Refuse (409) unless the ticket is at this version.")


class Acknowledge(Command):
    plan: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5_000)] = Field(
        description="Contact made and the plan committed to the customer."
    )


class AddComment(Command):
    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    public: bool = Field(False, description="Visible to the customer.")


class ChangeSeverity(Command):
    severity: Severity
    reason: Name


class AwaitCustomer(Command):
    reason: Name


class RecordCustomerResponse(Command):
    message: Text = ""


class Arrive(Command):
    engineer: Name
    note: Text = ""


class Resolve(Command):
    resolution: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    cause: Text = ""


class Confirm(Command):
    satisfaction: int | None = Field(None, ge=1, le=5, description="1 (very unhappy) to 5 (very happy).")
    comment: Text = ""


class Reopen(Command):
    reason: Name


class Close(Command):
    note: Text = ""


class Cancel(Command):
    reason: Name


class RequestVisit(Command):
    reason: Name


class RecordCallback(Command):
    note: Text = ""


class Escalate(Command):
    level: Literal["L2", "L3", "L4"]
    reason: Name


class TargetRead(BaseModel):
    target: str
    state: ClockState
    cycle: int
    rule: str = Field(description="What set this target: 'table', 'callback' or a policy rule's name.")
    calendar: str
    policy_version: str
    target_seconds: float
    started_at: datetime | None
    due_at: datetime | None = Field(description="None while paused before the target was used up.")
    warning_at: datetime | None
    met_at: datetime | None
    elapsed_seconds: float = Field(description="Working seconds used in this cycle.")
    remaining_seconds: float


class SlaRead(BaseModel):
    committed: bool
    reason: str | None = Field(description="Why nothing is owed (no, unknown or expired contract).")
    billable: bool | None
    policy_version: str | None
    level: str | None
    severity: Severity | None = Field(description="The effective severity after rules such as VIP priority.")
    unverified_years: list[int] = Field(description="Years a deadline reaches without an official holiday schedule.")
    escalation_level: str
    targets: list[TargetRead]

    @classmethod
    def of(cls, ticket: Ticket, policy: Policy, now: datetime) -> SlaRead:
        plan = ticket.sla_plan
        return cls(
            committed=plan is not None, reason=ticket.no_commitment_reason,
            billable=ticket.entitlement.get("billable"),
            policy_version=plan.policy_version if plan else None, level=plan.level if plan else None,
            severity=plan.severity if plan else None, unverified_years=list(plan.unverified_years) if plan else [],
            escalation_level=ticket.escalation_level,
            targets=[TargetRead(**vars(view(clock, policy, now))) for clock in ticket.sla.clocks.values()],
        )


class QuoteRequest(Strict):
    severity: Severity
    contract: Short | None = Field(None, description="Quote on this contract's terms...")
    level: Short | None = Field(None, description="...or on this service level (standard, premium).")
    category: Category = Category.FAULT
    zone: Annotated[str, StringConstraints(pattern=r"^(in_city|suburban|out_of_town)$")] | None = None
    tier: Literal["normal", "vip"] = "normal"
    start: Instant | None = Field(None, description="Received instant; default now.")


class QuotedTarget(BaseModel):
    target: str
    rule: str
    calendar: str
    seconds: float
    due_at: datetime | None = Field(description="None for the callback, which counts from the resolution.")


class Quote(BaseModel):
    committed: bool
    reason: str | None
    policy_version: str
    level: str | None
    severity: Severity | None
    raised_by: list[str]
    on_site_owed: bool
    unverified_years: list[int]
    targets: list[QuotedTarget]


class TicketRead(BaseModel):
    id: UUID
    number: str
    version: int
    status: Status
    severity: Severity
    category: Category
    channel: Channel
    customer: str
    contract: str | None
    site: dict[str, Any]
    device: dict[str, Any]
    summary: str
    description: str
    contact: dict[str, Any]
    source: dict[str, Any]
    received_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    confirmed_at: datetime | None
    closed_at: datetime | None
    reopen_count: int
    satisfaction: int | None
    sla: SlaRead

    @classmethod
    def of(cls, ticket: Ticket, policy: Policy, now: datetime) -> TicketRead:
        return cls(
            id=ticket.id, number=ticket.number, version=ticket.version, status=ticket.status,
            severity=ticket.severity, category=ticket.category, channel=ticket.channel,
            customer=ticket.customer, contract=ticket.contract, site=ticket.site, device=ticket.device,
            summary=ticket.summary, description=ticket.description, contact=ticket.contact, source=ticket.source,
            received_at=ticket.received_at, updated_at=ticket.modified_on,
            acknowledged_at=ticket.acknowledged_at, arrived_at=ticket.arrived_at, resolved_at=ticket.resolved_at,
            confirmed_at=ticket.confirmed_at, closed_at=ticket.closed_at,
            reopen_count=ticket.reopen_count, satisfaction=ticket.satisfaction,
            sla=SlaRead.of(ticket, policy, now),
        )


class HistoryEntry(BaseModel):
    id: UUID
    version: int
    type: str
    recorded_at: datetime
    actor: dict[str, str] | None
    correlation_id: str | None
    causation_id: UUID | None = Field(
        None, description="The event in the same stream that caused this one (none: a request or a deadline did)."
    )
    hash: str | None = Field(description="SHA-256 of the event's canonical content (tamper evidence).")
    previous_hash: str | None = Field(description="The hash of the event before it in the same stream.")
    data: dict[str, Any]


class FeedEntry(HistoryEntry):
    position: int
    stream_id: UUID = Field(description="The ticket (or contract) the event belongs to.")


class Feed(BaseModel):
    events: list[FeedEntry]
    next_after: int = Field(description="Pass as `after` to continue; stable across calls.")
