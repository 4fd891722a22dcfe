"""The Contract aggregate: one stream per service contract (服务合同).

A contract decides whether the vendor owes an SLA at all and on which terms: its
validity period (outside it nothing is promised), the warranty (free or billable
work), the service level (5×8 or 7×24 in the policy), the customer's tier (VIP
raises priority), the site's zone (on-site targets) and an optional dedicated
engineer (专人专线).

The stream id derives from the contract code, so registering a code twice is the
same stream: a concurrent second registration conflicts instead of duplicating.
Events store dates as ISO text (the store's JSON has no date type) and only assign
state, so replaying an old stream never re-runs today's validation rules.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from datetime import date, datetime
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate

from shared.domain.chain import Chained

from shared.domain.errors import InvalidContractTerms
from shared.domain.ticket import Actor

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TEXT_MAX = 200  # the widest text the contract list read model stores
ISO_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"  # a calendar date only: no time, no week dates
DEFAULT_TIME_ZONE = "Asia/Shanghai"

_CODE = re.compile(CODE_PATTERN)
_ISO_DATE = re.compile(ISO_DATE_PATTERN)


class Tier(StrEnum):
    NORMAL = "normal"
    VIP = "vip"


class Zone(StrEnum):
    """Where the customer's site lies, seen from the serving branch (seed 001's paid on-site targets)."""

    IN_CITY = "in_city"
    SUBURBAN = "suburban"
    OUT_OF_TOWN = "out_of_town"


def contract_id(code: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"urn:ticketing:contract:{code}")


def check_code(code: str) -> None:
    if not _CODE.match(code):
        raise InvalidContractTerms("code", f"{code!r} does not match {CODE_PATTERN}")


@dataclass(frozen=True)
class Terms:
    """Everything a contract says, apart from its code. Build it with `Terms.of`,
    which checks every rule; the dates are local dates in `time_zone`, `valid_to`
    and `warranty_until` being the last day included."""

    customer: str
    level: str  # a service level name; the SLA policy checks it exists
    valid_from: date
    valid_to: date
    tier: Tier = Tier.NORMAL
    warranty_until: date | None = None  # None: no warranty, all work is billable
    region: str | None = None
    zone: Zone | None = None
    dedicated_engineer: str | None = None
    time_zone: str = DEFAULT_TIME_ZONE

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Terms:
        """Checked terms from untyped data (a request body, a TOML table): dates as
        dates or ISO text, enums by value; omitted optional terms take their default."""
        unknown = sorted(set(values) - _NAMES)
        if unknown:
            raise InvalidContractTerms(unknown[0], "not a contract term")
        missing = sorted(_REQUIRED - set(values))
        if missing:
            raise InvalidContractTerms(missing[0], "required")
        given = _DEFAULTS | dict(values)
        terms = cls(
            customer=_text("customer", given["customer"]),
            level=_text("level", given["level"]),
            valid_from=_date("valid_from", given["valid_from"]),
            valid_to=_date("valid_to", given["valid_to"]),
            tier=_member(Tier, "tier", given["tier"]),
            warranty_until=_optional(_date, "warranty_until", given["warranty_until"]),
            region=_optional(_text, "region", given["region"]),
            zone=_optional(partial(_member, Zone), "zone", given["zone"]),
            dedicated_engineer=_optional(_text, "dedicated_engineer", given["dedicated_engineer"]),
            time_zone=_time_zone("time_zone", given["time_zone"]),
        )
        if terms.valid_to < terms.valid_from:
            raise InvalidContractTerms("valid_to", f"{terms.valid_to} is before valid_from {terms.valid_from}")
        return terms

    def record(self) -> dict[str, Any]:
        """The terms as events record them: plain JSON values."""
        return {f.name: _encoded(getattr(self, f.name)) for f in fields(self)}


_NAMES = frozenset(f.name for f in fields(Terms))
_DEFAULTS = {f.name: f.default for f in fields(Terms) if f.default is not MISSING}
_REQUIRED = _NAMES - set(_DEFAULTS)

# Recorded form → state. No rules here: an old event must always replay.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "valid_from": date.fromisoformat,
    "valid_to": date.fromisoformat,
    "warranty_until": date.fromisoformat,
    "tier": Tier,
    "zone": Zone,
}


def _decoded(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: value if value is None or name not in _DECODERS else _DECODERS[name](value)
        for name, value in record.items()
    }


def _encoded(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value


class Contract(Chained):
    class Event(Chained.Event):
        actor: Actor
        correlation_id: str

    class Registered(Event, Aggregate.Created):
        code: str
        terms: dict[str, Any]  # every term, in recorded form (Terms.record)

    def __init__(self, *, code: str, terms: dict[str, Any], actor: Actor, correlation_id: str) -> None:
        self.code = code
        self.registered_by = actor
        self._adopt(Terms(**_decoded(terms)))

    @classmethod
    def register(cls, code: str, terms: Terms, *, at: datetime, actor: Actor, correlation_id: str) -> Contract:
        check_code(code)
        return cls._create(
            cls.Registered, id=contract_id(code), timestamp=at,
            code=code, terms=terms.record(), actor=actor, correlation_id=correlation_id,
        )

    @property
    def terms(self) -> Terms:
        return Terms(
            customer=self.customer, level=self.level, valid_from=self.valid_from, valid_to=self.valid_to,
            tier=self.tier, warranty_until=self.warranty_until, region=self.region, zone=self.zone,
            dedicated_engineer=self.dedicated_engineer, time_zone=self.time_zone,
        )

    def amend(self, terms: Terms, *, at: datetime, actor: Actor, correlation_id: str) -> bool:
        """Record the terms that differ from the current ones; False (and no event) when none do."""
        current = self.terms.record()
        changes = {name: value for name, value in terms.record().items() if current[name] != value}
        if not changes:
            return False
        self.trigger_event(self.Amended, timestamp=at, changes=changes, actor=actor, correlation_id=correlation_id)
        return True

    def _adopt(self, terms: Terms) -> None:
        self.customer = terms.customer
        self.level = terms.level
        self.valid_from = terms.valid_from
        self.valid_to = terms.valid_to
        self.tier = terms.tier
        self.warranty_until = terms.warranty_until
        self.region = terms.region
        self.zone = terms.zone
        self.dedicated_engineer = terms.dedicated_engineer
        self.time_zone = terms.time_zone

    class Amended(Event):
        changes: dict[str, Any]  # only the terms that changed, with their new recorded values

        def apply(self, contract: Contract) -> None:
            contract._adopt(replace(contract.terms, **_decoded(self.changes)))


# -- checking untyped terms ---------------------------------------------------------

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


def _optional(parse: Callable[[str, Any], _T], name: str, value: Any) -> _T | None:
    return None if value is None else parse(name, value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidContractTerms(name, "must be non-empty text")
    if len(value) > TEXT_MAX:
        raise InvalidContractTerms(name, f"longer than {TEXT_MAX} characters")
    return value


def _date(name: str, value: Any) -> date:
    # A datetime is a date subclass: refuse it, a contract term is a whole local day.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidContractTerms(name, f"{value!r} is not a date (YYYY-MM-DD)")


def _member(enum: type[_E], name: str, value: Any) -> _E:
    try:
        return enum(value)
    except ValueError:
        raise InvalidContractTerms(name, f"{value!r} is not one of {', '.join(enum)}") from None


def _time_zone(name: str, value: Any) -> str:
    try:
        ZoneInfo(_text(name, value))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidContractTerms(name, f"unknown time zone {value!r}") from None
    return value
