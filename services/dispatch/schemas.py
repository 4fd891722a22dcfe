"""The dispatch API's request and response bodies. Requests are strict (unknown fields
refused, every string bounded), like the intake API's."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from services.intake.schemas import Instant, Name, Short, Strict, Text
from shared.domain.engineer import Engineer
from shared.domain.spare_unit import Conversion, SpareUnit, UnitState
from shared.domain.ticket import Severity, Ticket

Level = Literal["L1", "L2", "L3"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SkillName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


# -- engineers ---------------------------------------------------------------------------


class EngineerProfile(Strict):
    """All of an engineer's attributes: a PUT replaces them."""

    name: Name
    branch: Name = Field(description="City of their office: 西安 (head office), 安康, 汉中, 宝鸡, 榆林...")
    level: Level = Field(description="L1 hotline, L2 field engineer / senior, L3 R&D / technical advisor.")
    skills: list[SkillName] = Field(max_length=50, description="e.g. network, database, server (see the rules' skills).")
    hours: Name = Field(description="A calendar of the SLA policy: when they are at work, e.g. cn-business (5×8).")
    on_call: list[Weekday] = Field([], description="Duty days: on call from that day's changeover (09:00) to the next.")
    max_tickets: int = Field(ge=1, le=100, description="The most tickets they carry at once.")
    active: bool = True


class CarriedTicket(BaseModel):
    id: UUID
    number: str


class EngineerRead(BaseModel):
    id: str
    version: int
    name: str
    branch: str
    region: str | None
    level: Level
    skills: list[str]
    hours: str
    on_call: list[Weekday]
    max_tickets: int
    active: bool
    load: int
    tickets: list[CarriedTicket]
    duty_now: str | None = Field(description="'at work', 'on call (<day> duty)', or null when off duty.")
    registered_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, engineer: Engineer, region: str | None, duty_now: str | None) -> EngineerRead:
        p = engineer.profile
        return cls(
            id=engineer.code, version=engineer.version, name=p.name, branch=p.branch, region=region, level=p.level,
            skills=list(p.skills), hours=p.hours, on_call=list(p.on_call), max_tickets=p.max_tickets, active=p.active,
            load=engineer.load, tickets=[CarriedTicket(id=i, number=n) for i, n in engineer.tickets.items()],
            duty_now=duty_now, registered_at=engineer.created_on, updated_at=engineer.modified_on,
        )


class AvailableEngineer(BaseModel):
    id: str
    name: str
    branch: str
    level: Level
    load: int
    max_tickets: int
    rules: list[str] = Field(description="The dispatch rules this engineer matched, in plain words.")


class Availability(BaseModel):
    at: datetime = Field(description="The service instant the duty rota was read at (later than now for a 5×8 "
                                     "contract outside its hours).")
    required_level: Level
    skill: str | None
    engineers: list[AvailableEngineer] = Field(description="Who can take the ticket, best first.")
    rejected: dict[str, int] = Field(description="Why the others cannot: rule → how many engineers.")


# -- spare units -------------------------------------------------------------------------


class UnitRecord(Strict):
    serial: Name
    model: Name = Field(description="e.g. S5700-28C-EI; a ticket's device model reserves the same model.")
    warehouse: Name = Field(description="A warehouse code of the stock rules, e.g. WH-HZ.")


class SpareUnitRead(BaseModel):
    id: str
    version: int
    serial: str
    model: str
    warehouse: str
    state: UnitState
    ticket_id: UUID | None
    ticket_number: str | None
    return_by: datetime | None = Field(description="When a loaned unit is due back.")
    overdue: bool
    retired_reason: str | None
    registered_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, unit: SpareUnit) -> SpareUnitRead:
        return cls(
            id=unit.code, version=unit.version, serial=unit.record.serial, model=unit.record.model,
            warehouse=unit.record.warehouse, state=unit.state, ticket_id=unit.ticket_id, ticket_number=unit.ticket_number,
            return_by=unit.return_by, overdue=unit.overdue, retired_reason=unit.retired_reason,
            registered_at=unit.created_on, updated_at=unit.modified_on,
        )


class Ship(Strict):
    reference: Short = Field("", description="Carrier and tracking number, or who carries it.")


class Install(Strict):
    return_by: Instant | None = Field(None, description="Due back by; default: the loan period of the stock rules.")


class Note(Strict):
    note: Text = ""


class Convert(Strict):
    how: Conversion = Field(description="sold, or replaced (kept as the customer's replacement unit).")
    note: Text = ""


class Retire(Strict):
    reason: Name


# -- engineers' actions on a ticket ------------------------------------------------------


class Acting(Strict):
    engineer: Name = Field(description="The engineer's id, e.g. E-017.")


class WithReason(Acting):
    reason: Name


class Depart(Acting):
    eta: Short = Field("", description="Expected arrival, in words, e.g. 'ETA 90 min'.")


class Arrive(Acting):
    note: Text = ""


class Complaint(Strict):
    engineer: Name | None = Field(None, description="The engineer complained about; default: the lead.")
    reason: Name


class SpareRequest(Acting):
    model: Name | None = Field(None, description="Default: the ticket's device model.")
    reason: Name


class OnTicket(BaseModel):
    engineer: str
    level: Level
    role: str = Field(description="lead, support or panel.")
    for_level: str = Field(description="The escalation level the assignment staffs.")
    accepted: bool


class TicketDispatch(BaseModel):
    """A ticket as dispatch sees it: who is on it and which spare units concern it."""

    id: UUID
    number: str
    version: int
    status: str
    severity: Severity
    escalation_level: str
    lead: str | None
    engineers: list[OnTicket]
    excluded: list[str] = Field(description="Engineers who declined, handed back or were complained about.")
    spare_units: list[str]
    loaned_units: list[str]
    overdue_units: list[str]

    @classmethod
    def of(cls, ticket: Ticket) -> TicketDispatch:
        return cls(
            id=ticket.id, number=ticket.number, version=ticket.version, status=str(ticket.status), severity=ticket.severity,
            escalation_level=ticket.escalation_level, lead=ticket.lead_engineer,
            engineers=[OnTicket(engineer=a.engineer, level=a.level, role=a.role, for_level=a.for_level,
                                accepted=a.engineer in ticket.accepted_by) for a in ticket.assignments],
            excluded=sorted(ticket.excluded_engineers), spare_units=sorted(ticket.spare_units),
            loaned_units=sorted(ticket.loaned_units), overdue_units=sorted(ticket.overdue_units),
        )


class ReservationRead(BaseModel):
    reserved: str | None = Field(description="The spare unit reserved, or null when none was available.")
    warehouse: str | None
    distance_km: float | None
    detail: str
    ticket: TicketDispatch
