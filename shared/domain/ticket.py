"""The Ticket aggregate: one append-only stream per support request (服务请求 / 故障单).

Every command checks the transition table first and only then triggers its event,
so a rejected command leaves the stream untouched. Event bodies only assign state:
replaying an old stream never re-runs today's rules.
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.domain import Aggregate

from shared.domain.chain import Chained
from shared.domain.errors import AlreadyAcknowledged, IllegalTransition, LoanOutstanding, NotOnTicket, SeverityUnchanged
from shared.sla.clocks import SlaClocks
from shared.sla.targets import Plan


class Status(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ON_SITE = "on_site"
    AWAITING_CUSTOMER = "awaiting_customer"
    RESOLVED = "resolved"
    CONFIRMED = "confirmed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Severity(StrEnum):
    P1 = "P1"  # system down, all service interrupted
    P2 = "P2"  # latent risk of collapse, or a key function lost
    P3 = "P3"  # service, performance or part of it degraded
    P4 = "P4"  # intermittent or indirect effect; questions


class Category(StrEnum):
    FAULT = "fault"
    CONSULTATION = "consultation"
    COMPLAINT = "complaint"
    CHANGE_REQUEST = "change_request"
    UPGRADE = "upgrade"
    INSPECTION = "inspection"
    TRAINING = "training"


class Channel(StrEnum):
    HOTLINE = "hotline"
    EMAIL = "email"
    IM = "im"
    FAX = "fax"
    LETTER = "letter"
    VISIT = "visit"
    PORTAL = "portal"
    MONITORING = "monitoring"
    API = "api"


_ACTIVE = frozenset({Status.OPEN, Status.ACKNOWLEDGED, Status.ON_SITE, Status.AWAITING_CUSTOMER})

# Which statuses each command may start from. The whole lifecycle in one table:
# opened → acknowledged → on site → resolved → confirmed → closed, with side paths.
ALLOWED_FROM: dict[str, frozenset[Status]] = {
    "acknowledge": frozenset({Status.OPEN}),
    "arrive": frozenset({Status.ACKNOWLEDGED}),
    "await_customer": frozenset({Status.ACKNOWLEDGED, Status.ON_SITE}),
    "record_customer_response": frozenset({Status.AWAITING_CUSTOMER}),
    "resolve": frozenset({Status.ACKNOWLEDGED, Status.ON_SITE}),
    "confirm": frozenset({Status.RESOLVED}),
    "reopen": frozenset({Status.RESOLVED, Status.CONFIRMED}),
    "close": frozenset({Status.RESOLVED, Status.CONFIRMED}),
    "cancel": _ACTIVE,
    "change_severity": _ACTIVE,
    "comment": frozenset(Status),
    "request_visit": frozenset({Status.OPEN, Status.ACKNOWLEDGED, Status.AWAITING_CUSTOMER}),
    "record_callback": frozenset({Status.RESOLVED}),
    "escalate": _ACTIVE | {Status.RESOLVED},
    # Dispatch: engineers on the ticket and spare units lent to the customer.
    "assign_engineer": _ACTIVE,
    "record_no_engineer": _ACTIVE,
    "accept_assignment": _ACTIVE,
    "decline_assignment": _ACTIVE,
    "depart": frozenset({Status.OPEN, Status.ACKNOWLEDGED}),
    "hand_back": _ACTIVE,
    "complain_about_engineer": _ACTIVE,
    "reserve_spare": _ACTIVE,
    "record_no_spare": _ACTIVE,
    "ship_spare": _ACTIVE,
    "install_spare": _ACTIVE,
    # A unit's way back is a fact whatever became of the ticket (a loan outlives the fix).
    "return_spare": frozenset(Status),
    "convert_loan": frozenset(Status),
    "record_return_overdue": frozenset(Status),
    "release_spare": frozenset(Status),
}

ESCALATION_LEVELS = ("L1", "L2", "L3", "L4")

Actor = dict[str, str]  # {"kind": "client" | "engineer" | "customer" | "service", "id": ...}


class Ticket(Chained):
    class Event(Chained.Event):
        actor: Actor
        correlation_id: str

    class Opened(Event, Aggregate.Created):
        number: str
        severity: str
        category: str
        channel: str
        customer: str
        contract: str | None
        site: dict[str, Any]
        device: dict[str, Any]
        summary: str
        description: str
        contact: dict[str, Any]
        source: dict[str, Any]
        request_digest: str

    def __init__(
        self,
        *,
        number: str,
        severity: str,
        category: str,
        channel: str,
        customer: str,
        contract: str | None,
        site: dict[str, Any],
        device: dict[str, Any],
        summary: str,
        description: str,
        contact: dict[str, Any],
        source: dict[str, Any],
        request_digest: str,
        actor: Actor,
        correlation_id: str,
    ) -> None:
        self.number = number
        self.severity = Severity(severity)
        self.category = Category(category)
        self.channel = Channel(channel)
        self.customer = customer
        self.contract = contract
        self.site = site
        self.device = device
        self.summary = summary
        self.description = description
        self.contact = contact
        self.source = source
        self.request_digest = request_digest
        self.opened_by = actor
        self.status = Status.OPEN
        self.resume_status: Status | None = None
        self.acknowledged_at: datetime | None = None
        self.arrived_at: datetime | None = None
        self.resolved_at: datetime | None = None
        self.confirmed_at: datetime | None = None
        self.closed_at: datetime | None = None
        self.reopen_count = 0
        self.comment_count = 0
        self.satisfaction: int | None = None
        self.sla = SlaClocks()
        self.sla_plan: Plan | None = None
        self.entitlement: dict[str, Any] = {}
        self.no_commitment_reason: str | None = None
        self.escalation_level = "L1"
        # What dispatch needs of the escalation it reacts to (its trigger and reason),
        # kept here so the reaction needs no read of the event from the store.
        self.last_escalated: Ticket.Escalated | None = None

    @property
    def received_at(self) -> datetime:
        return self.created_on

    @classmethod
    def open(cls, *, id: UUID, at: datetime, actor: Actor, correlation_id: str, **details: Any) -> Ticket:
        return cls._create(
            cls.Opened, id=id, timestamp=at, actor=actor, correlation_id=correlation_id, **details
        )

    # -- commands ---------------------------------------------------------------

    def _check(self, command: str) -> None:
        if self.status in ALLOWED_FROM[command]:
            return
        if command == "acknowledge" and self.acknowledged_at is not None:
            raise AlreadyAcknowledged(command, self.status, f"ticket {self.number} was already acknowledged")
        raise IllegalTransition(command, self.status)

    def acknowledge(self, *, plan: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("acknowledge")
        self.trigger_event(self.Acknowledged, timestamp=at, plan=plan, actor=actor, correlation_id=correlation_id)

    def comment(self, *, text: str, public: bool, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("comment")
        self.trigger_event(
            self.Commented, timestamp=at, text=text, public=public, actor=actor, correlation_id=correlation_id
        )

    def change_severity(self, *, severity: Severity, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("change_severity")
        if severity == self.severity:
            raise SeverityUnchanged("change_severity", self.status, f"ticket {self.number} is already {severity}")
        self.trigger_event(
            self.SeverityChanged,
            timestamp=at,
            previous=str(self.severity),
            severity=str(severity),
            reason=reason,
            actor=actor,
            correlation_id=correlation_id,
        )

    def await_customer(self, *, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("await_customer")
        self.trigger_event(self.AwaitingCustomer, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id)

    def record_customer_response(self, *, message: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("record_customer_response")
        self.trigger_event(
            self.CustomerResponded, timestamp=at, message=message, actor=actor, correlation_id=correlation_id
        )

    def arrive(self, *, engineer: str, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("arrive")
        self.trigger_event(
            self.EngineerArrived, timestamp=at, engineer=engineer, note=note, actor=actor, correlation_id=correlation_id
        )

    def resolve(self, *, resolution: str, cause: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("resolve")
        self.trigger_event(
            self.Resolved, timestamp=at, resolution=resolution, cause=cause, actor=actor, correlation_id=correlation_id
        )

    def confirm(self, *, satisfaction: int | None, comment: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("confirm")
        self.trigger_event(
            self.Confirmed,
            timestamp=at,
            satisfaction=satisfaction,
            comment=comment,
            actor=actor,
            correlation_id=correlation_id,
        )

    def reopen(self, *, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("reopen")
        self.trigger_event(self.Reopened, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id)

    def close(self, *, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("close")
        self._check_no_loan("close")
        self.trigger_event(self.Closed, timestamp=at, note=note, actor=actor, correlation_id=correlation_id)

    def cancel(self, *, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("cancel")
        self._check_no_loan("cancel")  # cancelling would leave the lent unit at the customer with no ticket working on it
        self.trigger_event(self.Cancelled, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id)

    # -- SLA: commitments, alerts and escalation ----------------------------------

    def commit_sla(
        self, *, plan: Plan, entitlement: dict[str, Any], start: datetime, restart: bool, reason: str,
        at: datetime, actor: Actor, correlation_id: str,
    ) -> None:
        """Record the targets owed (at opening, or recomputed on a severity change)."""
        self.trigger_event(
            self.SlaCommitted, timestamp=at, plan=plan.to_data(), entitlement=entitlement, start=start,
            restart=restart, reason=reason, actor=actor, correlation_id=correlation_id,
        )

    def record_no_commitment(self, *, reason: str, entitlement: dict[str, Any], at: datetime, actor: Actor, correlation_id: str) -> None:
        self.trigger_event(
            self.NoSlaCommitment, timestamp=at, reason=reason, entitlement=entitlement,
            actor=actor, correlation_id=correlation_id,
        )

    def request_visit(self, *, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("request_visit")
        self.trigger_event(self.VisitRequested, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id)

    def record_callback(self, *, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("record_callback")
        self.trigger_event(self.CallbackRecorded, timestamp=at, note=note, actor=actor, correlation_id=correlation_id)

    def escalate(
        self, *, level: str, reason: str, at: datetime, actor: Actor, correlation_id: str, trigger: str = "manual"
    ) -> None:
        self._check("escalate")
        if level not in ESCALATION_LEVELS:
            raise IllegalTransition("escalate", self.status, f"unknown escalation level {level!r}")
        if ESCALATION_LEVELS.index(level) <= ESCALATION_LEVELS.index(self.escalation_level):
            raise IllegalTransition("escalate", self.status, f"ticket {self.number} is already at {self.escalation_level}")
        self.trigger_event(
            self.Escalated, timestamp=at, level=level, previous=self.escalation_level, reason=reason,
            trigger=trigger, actor=actor, correlation_id=correlation_id,
        )

    def record_sla_alert(self, *, kind: str, target: str, cycle: int, due_at: datetime, at: datetime, actor: Actor, correlation_id: str) -> bool:
        """Record a warning or breach once per target and cycle. A stale or repeated
        alert (the clock moved on, or another instance was first) records nothing."""
        clock = self.sla.clocks.get(target)
        if clock is None or clock.cycle != cycle or not clock.running:
            return False
        if (clock.breached if kind == "breach" else clock.warned or clock.breached):
            return False
        event = self.SlaBreached if kind == "breach" else self.SlaWarning
        self.trigger_event(event, timestamp=at, target=target, cycle=cycle, due_at=due_at, actor=actor, correlation_id=correlation_id)
        return True

    # -- events: state assignment only -----------------------------------------

    class Acknowledged(Event):
        plan: str

        def apply(self, ticket: Ticket) -> None:
            ticket.status = Status.ACKNOWLEDGED
            ticket.acknowledged_at = self.timestamp
            ticket.sla.meet("response", self.timestamp)

    class Commented(Event):
        text: str
        public: bool

        def apply(self, ticket: Ticket) -> None:
            ticket.comment_count += 1

    class SeverityChanged(Event):
        previous: str
        severity: str
        reason: str

        def apply(self, ticket: Ticket) -> None:
            ticket.severity = Severity(self.severity)

    class AwaitingCustomer(Event):
        reason: str

        def apply(self, ticket: Ticket) -> None:
            ticket.resume_status = ticket.status
            ticket.status = Status.AWAITING_CUSTOMER
            ticket.sla.pause(self.timestamp)

    class CustomerResponded(Event):
        message: str

        def apply(self, ticket: Ticket) -> None:
            ticket.status = ticket.resume_status or Status.ACKNOWLEDGED
            ticket.resume_status = None
            ticket.sla.resume(self.timestamp)

    class EngineerArrived(Event):
        engineer: str
        note: str

        def apply(self, ticket: Ticket) -> None:
            ticket.status = Status.ON_SITE
            ticket.arrived_at = self.timestamp
            ticket.sla.meet("on_site", self.timestamp)

    class Resolved(Event):
        resolution: str
        cause: str

        def apply(self, ticket: Ticket) -> None:
            ticket.status = Status.RESOLVED
            ticket.resolved_at = self.timestamp
            ticket.sla.meet("resolution", self.timestamp)
            ticket.sla.stop(self.timestamp, targets=("on_site",))  # fixed without a visit: none is owed now
            ticket.sla.start("callback", self.timestamp)

    class Confirmed(Event):
        satisfaction: int | None
        comment: str

        def apply(self, ticket: Ticket) -> None:
            ticket.status = Status.CONFIRMED
            ticket.confirmed_at = self.timestamp
            ticket.satisfaction = self.satisfaction
            ticket.sla.meet("callback", self.timestamp)

    class Reopened(Event):
        reason: str

        def apply(self, ticket: Ticket) -> None:
            # Work resumes where it stood before the resolution: acknowledged, awaiting a visit.
            ticket.status = Status.ACKNOWLEDGED
            ticket.reopen_count += 1
            ticket.resolved_at = None
            ticket.confirmed_at = None
            # A new resolution cycle from now: a reopen never breaches at once.
            ticket.sla.start("resolution", self.timestamp)
            ticket.sla.stop(self.timestamp, targets=("callback",))

    class Closed(Event):
        note: str

        def apply(self, ticket: Ticket) -> None:
            ticket.status = Status.CLOSED
            ticket.closed_at = self.timestamp
            ticket.sla.stop(self.timestamp)

    class Cancelled(Event):
        reason: str

        def apply(self, ticket: Ticket) -> None:
            ticket.status = Status.CANCELLED
            ticket.closed_at = self.timestamp
            ticket.sla.stop(self.timestamp)

    class SlaCommitted(Event):
        cloud_type = "sla.committed"
        follows_previous = True  # saved with the event that called for it (opened, severity changed)
        plan: dict[str, Any]
        entitlement: dict[str, Any]
        start: datetime
        restart: bool
        reason: str

        def apply(self, ticket: Ticket) -> None:
            ticket.sla_plan = Plan.from_data(self.plan)
            ticket.entitlement = self.entitlement
            ticket.sla.commit(ticket.sla_plan, self.start, restart=self.restart)

    class NoSlaCommitment(Event):
        cloud_type = "sla.no_commitment"
        follows_previous = True  # saved with ticket.opened
        reason: str
        entitlement: dict[str, Any]

        def apply(self, ticket: Ticket) -> None:
            ticket.no_commitment_reason = self.reason
            ticket.entitlement = self.entitlement

    class VisitRequested(Event):
        reason: str

        def apply(self, ticket: Ticket) -> None:
            ticket.sla.start_if_idle("on_site", self.timestamp)

    class CallbackRecorded(Event):
        note: str

        def apply(self, ticket: Ticket) -> None:
            ticket.sla.meet("callback", self.timestamp)

    class SlaWarning(Event):
        cloud_type = "sla.warning"
        target: str
        cycle: int
        due_at: datetime

        def apply(self, ticket: Ticket) -> None:
            ticket.sla.clocks[self.target].warned = True

    class SlaBreached(Event):
        cloud_type = "sla.breached"
        target: str
        cycle: int
        due_at: datetime

        def apply(self, ticket: Ticket) -> None:
            ticket.sla.clocks[self.target].breached = True

    class Escalated(Event):
        level: str
        previous: str
        reason: str
        trigger: str  # "manual", or "breach:<target>"

        @property
        def follows_previous(self) -> bool:
            return self.trigger.startswith("breach:")  # saved right after the breach that triggered it

        def apply(self, ticket: Ticket) -> None:
            ticket.escalation_level = self.level
            ticket.last_escalated = self

    # -- dispatch: engineers on the ticket ------------------------------------------
    # Recorded by the dispatch service. The state lives in class-level defaults, not in
    # __init__: immutable values that events replace (never mutate), so a ticket
    # recorded before dispatch existed reads the same.

    class Assignment(NamedTuple):
        engineer: str
        level: str  # the engineer's own level, L1-L3
        role: str  # "lead", "support" or "panel"
        for_level: str  # the escalation level the assignment staffs ("L1": the first one)

    assignments: tuple[Assignment, ...] = ()
    accepted_by: frozenset[str] = frozenset()
    excluded_engineers: frozenset[str] = frozenset()  # declined, handed back or complained about
    engineer_floor: str = "L1"  # after a complaint: the next engineer is at least this level
    dispatch_cause: int = 0  # the highest ticket version dispatch has reacted to
    spare_units: frozenset[str] = frozenset()  # reserved, shipped or installed for this ticket
    loaned_units: frozenset[str] = frozenset()  # installed at the customer, on loan
    overdue_units: frozenset[str] = frozenset()

    @property
    def lead_engineer(self) -> str | None:
        return next((a.engineer for a in self.assignments if a.role == "lead"), None)

    @property
    def engineers(self) -> tuple[str, ...]:
        return tuple(a.engineer for a in self.assignments)

    @property
    def staffed_level(self) -> str:
        """The highest escalation level whose engineers are on the ticket."""
        return max((a.for_level for a in self.assignments), key=ESCALATION_LEVELS.index, default="L1")

    def assign_engineer(
        self, *, engineer: str, level: str, role: str, for_level: str, rules: list[str], reason: str, cause: int,
        at: datetime, actor: Actor, correlation_id: str,
    ) -> None:
        """Put an engineer on the ticket; `rules` are the dispatch rules that matched, and
        `cause` the ticket version dispatch reacted to. A new lead keeps the previous
        one on the ticket as support (a hand-over)."""
        self._check("assign_engineer")
        if engineer in self.engineers:
            raise IllegalTransition("assign_engineer", self.status, f"{engineer} is already on ticket {self.number}")
        self.trigger_event(
            self.EngineerAssigned, timestamp=at, engineer=engineer, level=level, role=role, for_level=for_level,
            rules=rules, reason=reason, replaces=self.lead_engineer if role == "lead" else None, cause=cause,
            actor=actor, correlation_id=correlation_id,
        )

    def record_no_engineer(
        self, *, role: str, for_level: str, reason: str, rejected: dict[str, int], next_step: str, cause: int,
        at: datetime, actor: Actor, correlation_id: str,
    ) -> None:
        """Nobody fits: say why (how many engineers each rule ruled out) and what happens next."""
        self._check("record_no_engineer")
        self.trigger_event(
            self.NoEngineerAvailable, timestamp=at, role=role, for_level=for_level, reason=reason, rejected=rejected,
            next_step=next_step, cause=cause, actor=actor, correlation_id=correlation_id,
        )

    def accept_assignment(self, *, engineer: str, at: datetime, actor: Actor, correlation_id: str) -> bool:
        """False (and no event) when the engineer had already accepted."""
        self._check_engineer("accept_assignment", engineer)
        if engineer in self.accepted_by:
            return False
        self.trigger_event(self.AssignmentAccepted, timestamp=at, engineer=engineer, actor=actor, correlation_id=correlation_id)
        return True

    def decline_assignment(self, *, engineer: str, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_engineer("decline_assignment", engineer)
        if engineer in self.accepted_by:
            raise IllegalTransition("decline_assignment", self.status, f"{engineer} already accepted: hand the ticket back instead")
        self.trigger_event(
            self.AssignmentDeclined, timestamp=at, engineer=engineer, reason=reason, actor=actor, correlation_id=correlation_id
        )

    def depart(self, *, engineer: str, eta: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_engineer("depart", engineer)
        self.trigger_event(self.EngineerDeparted, timestamp=at, engineer=engineer, eta=eta, actor=actor, correlation_id=correlation_id)

    def hand_back(self, *, engineer: str, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_engineer("hand_back", engineer)
        self.trigger_event(
            self.EngineerHandedBack, timestamp=at, engineer=engineer, reason=reason, actor=actor, correlation_id=correlation_id
        )

    def complain_about_engineer(
        self, *, engineer: str, level: str, reason: str, at: datetime, actor: Actor, correlation_id: str
    ) -> None:
        """The customer complains (seed 003): the engineer leaves the ticket, and whoever
        replaces them is at least of their `level`."""
        self._check_engineer("complain_about_engineer", engineer)
        self.trigger_event(
            self.EngineerComplaint, timestamp=at, engineer=engineer, level=level, reason=reason,
            actor=actor, correlation_id=correlation_id,
        )

    def _check_engineer(self, command: str, engineer: str) -> None:
        self._check(command)
        if engineer not in self.engineers:
            raise NotOnTicket(command, self.status, f"{engineer} is not on ticket {self.number}")

    # -- dispatch: spare units lent to the customer --------------------------------------

    def reserve_spare(
        self, *, unit: str, serial: str, model: str, warehouse: str, distance_km: float | None, reason: str,
        cause: int, at: datetime, actor: Actor, correlation_id: str,
    ) -> None:
        self._check("reserve_spare")
        self.trigger_event(
            self.SpareUnitReserved, timestamp=at, unit=unit, serial=serial, model=model, warehouse=warehouse,
            distance_km=distance_km, reason=reason, cause=cause, actor=actor, correlation_id=correlation_id,
        )

    def record_no_spare(
        self, *, model: str, reason: str, next_step: str, cause: int, at: datetime, actor: Actor, correlation_id: str
    ) -> None:
        self._check("record_no_spare")
        self.trigger_event(
            self.SpareUnitUnavailable, timestamp=at, model=model, reason=reason, next_step=next_step, cause=cause,
            actor=actor, correlation_id=correlation_id,
        )

    def ship_spare(self, *, unit: str, reference: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_spare("ship_spare", unit)
        self.trigger_event(self.SpareUnitShipped, timestamp=at, unit=unit, reference=reference, actor=actor, correlation_id=correlation_id)

    def install_spare(self, *, unit: str, return_by: datetime, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_spare("install_spare", unit)
        self.trigger_event(self.SpareUnitInstalled, timestamp=at, unit=unit, return_by=return_by, actor=actor, correlation_id=correlation_id)

    def return_spare(self, *, unit: str, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_spare("return_spare", unit)
        self.trigger_event(self.SpareUnitReturned, timestamp=at, unit=unit, note=note, actor=actor, correlation_id=correlation_id)

    def convert_loan(self, *, unit: str, how: str, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        """The loaned unit stays with the customer for good (sold, or kept as the replacement)."""
        self._check_spare("convert_loan", unit)
        if unit not in self.loaned_units:
            raise NotOnTicket("convert_loan", self.status, f"spare unit {unit} is not on loan to the customer")
        self.trigger_event(self.SpareLoanConverted, timestamp=at, unit=unit, how=how, note=note, actor=actor, correlation_id=correlation_id)

    def record_return_overdue(self, *, unit: str, return_by: datetime, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_spare("record_return_overdue", unit)
        self.trigger_event(
            self.SpareReturnOverdue, timestamp=at, unit=unit, return_by=return_by, actor=actor, correlation_id=correlation_id
        )

    def release_spare(self, *, unit: str, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check_spare("release_spare", unit)
        self.trigger_event(
            self.SpareReservationReleased, timestamp=at, unit=unit, reason=reason, actor=actor, correlation_id=correlation_id
        )

    def _check_spare(self, command: str, unit: str) -> None:
        self._check(command)
        if unit not in self.spare_units:
            raise NotOnTicket(command, self.status, f"spare unit {unit} is not on ticket {self.number}")

    def _check_no_loan(self, command: str) -> None:
        if self.loaned_units:
            units = ", ".join(sorted(self.loaned_units))
            raise LoanOutstanding(
                command, self.status, f"spare unit {units} is still on loan at the customer: return it or convert the loan"
            )

    # -- dispatch events: state assignment only ----------------------------------------

    class Staffing(Event):
        """Who works the ticket, and with which spare units. No SLA clock, alert or
        escalation level depends on these: the SLA clock does not read them."""

    class EngineerAssigned(Staffing):
        engineer: str
        level: str
        role: str
        for_level: str
        rules: list[str]
        reason: str
        replaces: str | None
        cause: int

        def apply(self, ticket: Ticket) -> None:
            kept = tuple(a._replace(role="support") if self.role == "lead" and a.role == "lead" else a for a in ticket.assignments)
            ticket.assignments = (*kept, Ticket.Assignment(self.engineer, self.level, self.role, self.for_level))
            ticket.dispatch_cause = max(ticket.dispatch_cause, self.cause)

    class NoEngineerAvailable(Staffing):
        role: str
        for_level: str
        reason: str
        rejected: dict[str, int]
        next_step: str
        cause: int

        def apply(self, ticket: Ticket) -> None:
            ticket.dispatch_cause = max(ticket.dispatch_cause, self.cause)

    class AssignmentAccepted(Staffing):
        engineer: str

        def apply(self, ticket: Ticket) -> None:
            ticket.accepted_by = ticket.accepted_by | {self.engineer}

    class _EngineerLeft(Staffing):
        """An engineer leaves the ticket and is not dispatched to it again."""

        engineer: str
        reason: str

        def apply(self, ticket: Ticket) -> None:
            ticket.assignments = tuple(a for a in ticket.assignments if a.engineer != self.engineer)
            ticket.accepted_by = ticket.accepted_by - {self.engineer}
            ticket.excluded_engineers = ticket.excluded_engineers | {self.engineer}

    class AssignmentDeclined(_EngineerLeft):
        pass

    class EngineerHandedBack(_EngineerLeft):
        pass

    class EngineerComplaint(_EngineerLeft):
        level: str

        def apply(self, ticket: Ticket) -> None:
            super().apply(ticket)
            ticket.engineer_floor = max(ticket.engineer_floor, self.level, key=ESCALATION_LEVELS.index)

    class EngineerDeparted(Staffing):
        engineer: str
        eta: str

    class SpareUnitReserved(Staffing):
        unit: str
        serial: str
        model: str
        warehouse: str
        distance_km: float | None
        reason: str
        cause: int

        def apply(self, ticket: Ticket) -> None:
            ticket.spare_units = ticket.spare_units | {self.unit}
            ticket.dispatch_cause = max(ticket.dispatch_cause, self.cause)

    class SpareUnitUnavailable(Staffing):
        model: str
        reason: str
        next_step: str
        cause: int

        def apply(self, ticket: Ticket) -> None:
            ticket.dispatch_cause = max(ticket.dispatch_cause, self.cause)

    class SpareUnitShipped(Staffing):
        unit: str
        reference: str

    class SpareUnitInstalled(Staffing):
        unit: str
        return_by: datetime

        def apply(self, ticket: Ticket) -> None:
            ticket.loaned_units = ticket.loaned_units | {self.unit}

    class _SpareUnitGone(Staffing):
        """The unit no longer concerns the ticket: back in stock, or the customer's for good."""

        unit: str

        def apply(self, ticket: Ticket) -> None:
            ticket.spare_units = ticket.spare_units - {self.unit}
            ticket.loaned_units = ticket.loaned_units - {self.unit}
            ticket.overdue_units = ticket.overdue_units - {self.unit}

    class SpareUnitReturned(_SpareUnitGone):
        note: str

    class SpareLoanConverted(_SpareUnitGone):
        how: str  # "sold" or "replaced"
        note: str

    class SpareReservationReleased(_SpareUnitGone):
        reason: str

    class SpareReturnOverdue(Staffing):
        unit: str
        return_by: datetime

        def apply(self, ticket: Ticket) -> None:
            ticket.overdue_units = ticket.overdue_units | {self.unit}
