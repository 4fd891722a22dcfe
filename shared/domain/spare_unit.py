"""The SpareUnit aggregate: one stream per spare unit (备机), owned by dispatch.

A unit goes available → reserved (for one ticket) → shipped → installed at the
customer (on loan, due back by `return_by`) → returned → available again; or it is
retired, or its loan is converted (sold, or kept as the replacement) and it leaves
the stock. Reserving checks the unit is available on the stream's current
version, so two tickets racing for the last unit conflict on this stream and
exactly one of them gets it.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from shared.domain.chain import Chained
from shared.domain.engineer import check_code, one_of, text
from shared.domain.errors import IllegalUnitTransition, InvalidRosterEntry
from shared.domain.ticket import Actor


class UnitState(StrEnum):
    AVAILABLE = "available"
    RESERVED = "reserved"
    SHIPPED = "shipped"
    INSTALLED = "installed"  # at the customer, on loan
    RETURNED = "returned"  # back at its warehouse, not yet checked
    RETIRED = "retired"


class Conversion(StrEnum):
    SOLD = "sold"
    REPLACED = "replaced"  # kept as the replacement of the customer's unit


_IN_STOCK = frozenset({UnitState.AVAILABLE, UnitState.RETURNED})

ALLOWED_FROM: dict[str, frozenset[UnitState]] = {
    "amend": _IN_STOCK,  # a unit moves between warehouses only while it is in one
    "reserve": frozenset({UnitState.AVAILABLE}),
    "release": frozenset({UnitState.RESERVED}),
    "ship": frozenset({UnitState.RESERVED}),
    "install": frozenset({UnitState.SHIPPED}),
    "flag_overdue": frozenset({UnitState.INSTALLED}),
    "return_to_stock": frozenset({UnitState.SHIPPED, UnitState.INSTALLED}),
    "restock": frozenset({UnitState.RETURNED}),
    "convert": frozenset({UnitState.INSTALLED}),
    "retire": _IN_STOCK,
}


def spare_unit_id(code: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"urn:ticketing:spare-unit:{code}")


@dataclass(frozen=True)
class Record:
    """What registers a unit: its serial, model and home warehouse."""

    serial: str
    model: str
    warehouse: str

    @classmethod
    def of(cls, values: Mapping[str, Any], *, warehouses: Collection[str] | None = None) -> Record:
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(values) - names):
            raise InvalidRosterEntry(unknown[0], "not a spare unit attribute")
        if missing := sorted(names - set(values)):
            raise InvalidRosterEntry(missing[0], "required")
        return cls(
            serial=text("serial", values["serial"]),
            model=text("model", values["model"]),
            warehouse=one_of("warehouse", values["warehouse"], warehouses),
        )


class SpareUnit(Chained):
    class Event(Chained.Event):
        actor: Actor
        correlation_id: str

    class Registered(Event, Aggregate.Created):
        code: str
        record: dict[str, Any]

    def __init__(self, *, code: str, record: dict[str, Any], actor: Actor, correlation_id: str) -> None:
        self.code = code
        self.record = Record(**record)
        self.state = UnitState.AVAILABLE
        self.ticket_id: str | None = None
        self.ticket_number: str | None = None
        self.return_by: datetime | None = None
        self.overdue = False
        self.retired_reason: str | None = None

    @classmethod
    def register(cls, code: str, record: Record, *, at: datetime, actor: Actor, correlation_id: str) -> SpareUnit:
        check_code(code)
        return cls._create(
            cls.Registered, id=spare_unit_id(code), timestamp=at, code=code, record=asdict(record),
            actor=actor, correlation_id=correlation_id,
        )

    def _check(self, command: str) -> None:
        if self.state not in ALLOWED_FROM[command]:
            raise IllegalUnitTransition(command, self.state)

    def amend(self, record: Record, *, at: datetime, actor: Actor, correlation_id: str) -> bool:
        """Record the attributes that differ; False (and no event) when none do."""
        changes = {k: v for k, v in asdict(record).items() if asdict(self.record)[k] != v}
        if not changes:
            return False
        self._check("amend")
        self.trigger_event(self.Amended, timestamp=at, changes=changes, actor=actor, correlation_id=correlation_id)
        return True

    def reserve(self, *, ticket_id: UUID, number: str, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("reserve")
        self.trigger_event(
            self.Reserved, timestamp=at, ticket_id=str(ticket_id), number=number, reason=reason,
            actor=actor, correlation_id=correlation_id,
        )

    def release(self, *, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("release")
        self.trigger_event(self.ReservationReleased, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id)

    def ship(self, *, reference: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("ship")
        self.trigger_event(self.Shipped, timestamp=at, reference=reference, actor=actor, correlation_id=correlation_id)

    def install(self, *, return_by: datetime, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("install")
        if return_by <= at:
            raise IllegalUnitTransition("install", self.state, f"return_by {return_by.isoformat()} is not after now")
        self.trigger_event(self.Installed, timestamp=at, return_by=return_by, actor=actor, correlation_id=correlation_id)

    def flag_overdue(self, *, at: datetime, actor: Actor, correlation_id: str) -> bool:
        """Raise the overdue event once per loan; False (and no event) when not due yet or already raised."""
        if self.state is not UnitState.INSTALLED or self.overdue or self.return_by is None or at <= self.return_by:
            return False
        self.trigger_event(self.ReturnOverdue, timestamp=at, return_by=self.return_by, actor=actor, correlation_id=correlation_id)
        return True

    def return_to_stock(self, *, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("return_to_stock")
        self.trigger_event(self.Returned, timestamp=at, note=note, actor=actor, correlation_id=correlation_id)

    def restock(self, *, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("restock")
        self.trigger_event(self.Restocked, timestamp=at, note=note, actor=actor, correlation_id=correlation_id)

    def convert(self, *, how: Conversion, note: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("convert")
        self.trigger_event(self.LoanConverted, timestamp=at, how=str(how), note=note, actor=actor, correlation_id=correlation_id)

    def retire(self, *, reason: str, at: datetime, actor: Actor, correlation_id: str) -> None:
        self._check("retire")
        self.trigger_event(self.Retired, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id)

    # -- events: state assignment only -------------------------------------------

    class Amended(Event):
        changes: dict[str, Any]

        def apply(self, unit: SpareUnit) -> None:
            unit.record = Record(**asdict(unit.record) | self.changes)

    class Reserved(Event):
        ticket_id: str
        number: str
        reason: str

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.RESERVED
            unit.ticket_id = self.ticket_id
            unit.ticket_number = self.number

    class Shipped(Event):
        reference: str

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.SHIPPED

    class Installed(Event):
        return_by: datetime

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.INSTALLED
            unit.return_by = self.return_by

    class ReturnOverdue(Event):
        return_by: datetime

        def apply(self, unit: SpareUnit) -> None:
            unit.overdue = True

    class Returned(Event):
        note: str

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.RETURNED
            unit._end_loan()

    class ReservationReleased(Event):
        reason: str

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.AVAILABLE
            unit._end_loan()

    class Restocked(Event):
        note: str

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.AVAILABLE

    class LoanConverted(Event):
        how: str
        note: str

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.RETIRED
            unit.retired_reason = f"loan converted: {self.how}"
            unit.return_by = None
            unit.overdue = False

    class Retired(Event):
        reason: str

        def apply(self, unit: SpareUnit) -> None:
            unit.state = UnitState.RETIRED
            unit.retired_reason = self.reason

    def _end_loan(self) -> None:
        self.ticket_id = None
        self.ticket_number = None
        self.return_by = None
        self.overdue = False
