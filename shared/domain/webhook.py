"""The Webhook aggregate: one stream per webhook subscription, and the rules about
what a subscription may say and where it may point.

A subscription names a URL, the event types it wants (`ticket.escalated`, a family
such as `sla.*`, or `*` for everything), optional filters on the ticket's customer,
severity and region, and a description. Its signing secret never appears here in
clear: the application service seals it and the events record only the sealed text.

The events are internal (not relayed to NATS nor shown in the audit feed): they carry
endpoint URLs and sealed secrets that no other consumer should read. The exception is
`webhook.disabled`, a fact ops alerting may itself subscribe to.

Event bodies only assign state, so replaying an old stream never re-runs today's rules.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, ClassVar
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.domain import Aggregate

from shared.domain.chain import Chained
from shared.domain.errors import InvalidWebhook, WebhookStateConflict
from shared.domain.ticket import Actor, Severity

URL_MAX = 2000
TEXT_MAX = 200
EVENT_TYPES_MAX = 50
FILTER_VALUES_MAX = 50
EVENT_TYPE_PATTERN = r"^(\*|[a-z][a-z0-9_]*\.(\*|[a-z][a-z0-9_]*))$"

_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)

IPAddress = IPv4Address | IPv6Address


class Status(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # held by an operator: deliveries queue up and go out on resume
    DISABLED = "disabled"  # stopped by the notifier (410 Gone, or retries exhausted) until resumed
    DELETED = "deleted"


# -- what a subscription wants --------------------------------------------------------


def normalize_event_types(patterns: Iterable[str]) -> tuple[str, ...]:
    """Checked, sorted patterns without redundancy: `*` alone swallows everything, and
    `sla.*` swallows `sla.breached`. (The notifier turns them into NATS filter
    subjects, which must not overlap.)"""
    wanted = set()
    for pattern in patterns:
        if not isinstance(pattern, str) or not _EVENT_TYPE.match(pattern):
            raise InvalidWebhook("event_types", f"{pattern!r} is not an event type such as ticket.escalated, sla.* or *")
        wanted.add(pattern)
    if not wanted:
        raise InvalidWebhook("event_types", "name at least one event type")
    if len(wanted) > EVENT_TYPES_MAX:
        raise InvalidWebhook("event_types", f"more than {EVENT_TYPES_MAX} event types")
    if "*" in wanted:
        return ("*",)
    families = {p.removesuffix(".*") for p in wanted if p.endswith(".*")}
    return tuple(sorted(p for p in wanted if p.endswith(".*") or p.partition(".")[0] not in families))


def type_matches(patterns: Iterable[str], event_type: str) -> bool:
    family = event_type.partition(".")[0]
    return any(p in ("*", event_type, f"{family}.*") for p in patterns)


@dataclass(frozen=True)
class Facts:
    """What filters look at: the customer, severity and region of the stream an event
    belongs to, as it stood at that event (None where the stream has no such thing)."""

    customer: str | None = None
    severity: str | None = None
    region: str | None = None

    @classmethod
    def of(cls, aggregate: object) -> Facts:
        """A ticket's region is its site's, else its contract's; a contract has its own."""
        site = getattr(aggregate, "site", None) or {}
        entitlement = getattr(aggregate, "entitlement", None) or {}
        severity = getattr(aggregate, "severity", None)
        return cls(
            customer=getattr(aggregate, "customer", None),
            severity=str(severity) if severity is not None else None,
            region=site.get("region") or entitlement.get("region") or getattr(aggregate, "region", None),
        )


@dataclass(frozen=True)
class Filters:
    """Each list empty: anything. Otherwise the event's stream must have one of the values,
    so an event without a customer (a contract-less system event) passes no customer filter."""

    customers: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Mapping[str, Any] | None) -> Filters:
        values = values or {}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidWebhook(f"filters.{unknown[0]}", "not a filter (customers, severities, regions)")
        filters = cls(**{name: _texts(f"filters.{name}", value or ()) for name, value in values.items()})
        for severity in filters.severities:
            if severity not in Severity.__members__:
                raise InvalidWebhook("filters.severities", f"{severity!r} is not one of {', '.join(Severity)}")
        return filters

    def record(self) -> dict[str, list[str]]:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    def within(self, customers: frozenset[str] | None) -> bool:
        """Whether these filters keep deliveries to some of `customers` and no other
        (None: no limit), as an integration key's subscriptions must."""
        return customers is None or (bool(self.customers) and set(self.customers) <= customers)

    def admits(self, facts: Facts) -> bool:
        pairs = ((self.customers, facts.customer), (self.severities, facts.severity), (self.regions, facts.region))
        return all(not wanted or value in wanted for wanted, value in pairs)


def _texts(name: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidWebhook(name, "expected a list of text values")
    checked = tuple(dict.fromkeys(_text(name, value) for value in values))
    if len(checked) > FILTER_VALUES_MAX:
        raise InvalidWebhook(name, f"more than {FILTER_VALUES_MAX} values")
    return checked


def _text(name: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise InvalidWebhook(name, "must be non-empty text")
    if len(value) > TEXT_MAX:
        raise InvalidWebhook(name, f"longer than {TEXT_MAX} characters")
    return value


def check_url(url: Any) -> str:
    """The URL's host, if the URL is well formed: http(s), a host, no credentials (the
    URL is recorded in events, where a password would sit in clear)."""
    if not isinstance(url, str) or not url or len(url) > URL_MAX:
        raise InvalidWebhook("url", f"must be a URL of at most {URL_MAX} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as error:
        raise InvalidWebhook("url", f"not a valid URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhook("url", "must start with https:// or http://")
    if not parts.hostname:
        raise InvalidWebhook("url", "has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("url", "must not carry credentials; verify our signature instead")
    return parts.hostname


@dataclass(frozen=True)
class Spec:
    """What a subscriber chose: where to, which events, which tickets, and a note."""

    url: str
    event_types: tuple[str, ...]
    filters: Filters = Filters()
    description: str = ""

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Spec:
        """Checked terms from untyped data (a request body)."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidWebhook(unknown[0], "not a subscription term")
        for required in ("url", "event_types"):
            if values.get(required) is None:
                raise InvalidWebhook(required, "required")
        return cls._checked(values["url"], values["event_types"], values.get("filters"), values.get("description") or "")

    def amended(self, values: Mapping[str, Any]) -> Spec:
        """These terms with the given ones replaced (a PATCH)."""
        current = {"url": self.url, "event_types": self.event_types, "filters": self.filters.record(),
                   "description": self.description}
        return Spec.of(current | {k: v for k, v in values.items() if v is not None})

    @classmethod
    def _checked(cls, url: Any, event_types: Any, filters: Any, description: Any) -> Spec:
        check_url(url)
        if isinstance(event_types, str) or not isinstance(event_types, Iterable):
            raise InvalidWebhook("event_types", "expected a list of event types")
        return cls(url, normalize_event_types(event_types), Filters.of(filters), _text("description", description, empty=True))

    def record(self) -> dict[str, Any]:
        return {"url": self.url, "event_types": list(self.event_types), "filters": self.filters.record(),
                "description": self.description}

    def wants_type(self, event_type: str) -> bool:
        return type_matches(self.event_types, event_type)


def spec_from_record(record: Mapping[str, Any]) -> Spec:
    """Recorded terms → Spec, without checking: an old event must always replay."""
    return Spec(record["url"], tuple(record["event_types"]),
                Filters(**{k: tuple(v) for k, v in record["filters"].items()}), record["description"])


# -- where a webhook may point: the SSRF rule -------------------------------------------

_NAT64 = ip_network("64:ff9b::/96")


class Destinations:
    """Which addresses webhooks may reach. Loopback, private, link-local (cloud metadata
    at 169.254.169.254 among them), shared, reserved and multicast addresses are
    refused unless allow-listed by host name, address or network; the rest of the
    internet is allowed."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._hosts: set[str] = set()
        self._networks = []
        for entry in allowed:
            try:
                self._networks.append(ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower().rstrip("."))

    def refusal(self, host: str, addresses: Iterable[IPAddress]) -> str | None:
        """Why `host`, resolving to `addresses`, may not be called; None if it may.
        One refused address refuses the host: a name that resolves partly inward
        is how DNS rebinding gets in."""
        if host.lower().rstrip(".") in self._hosts:
            return None
        resolved = list(addresses)
        if not resolved:
            return f"{host} does not resolve to any address"
        for address in resolved:
            if isinstance(address, IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped  # so an allow-listed 127.0.0.1 covers ::ffff:127.0.0.1
            if any(address in network for network in self._networks):
                continue
            kind = _inward_kind(address)
            if kind:
                named = host if host == str(address) else f"{host} resolves to {address}, which"
                return f"{named} is a {kind} address"
        return None


def _inward_kind(address: IPAddress) -> str | None:
    """What makes an address one the service must not call, or None for a public one."""
    if isinstance(address, IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is None and address in _NAT64:
            embedded = IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return _inward_kind(embedded)
    # Link-local before private: Python counts 169.254/16 (cloud metadata) as private too.
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


def parse_address(text: str) -> IPAddress:
    """An address as getaddrinfo gives it (an IPv6 one may carry a `%scope`)."""
    return ip_address(text.partition("%")[0])


# -- the aggregate ----------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A sealed secret and until when it signs (None: the current one, until rotated)."""

    sealed: str
    until: datetime | None = None

    def signs_at(self, instant: datetime) -> bool:
        return self.until is None or instant < self.until


class Webhook(Chained):
    class Event(Chained.Event):
        internal: ClassVar[bool] = True
        actor: Actor
        correlation_id: str

    class Subscribed(Event, Aggregate.Created):
        spec: dict[str, Any]  # Spec.record()
        secret: str  # sealed

    def __init__(self, *, spec: dict[str, Any], secret: str, actor: Actor, correlation_id: str) -> None:
        self.spec = spec_from_record(spec)
        self.keys = [SigningKey(secret)]
        self.status = Status.ACTIVE
        self.subscribed_by = actor
        self.disabled_reason: str | None = None
        self.redeliveries: dict[str, dict[str, Any]] = {}  # request id → what to send again, until done

    @classmethod
    def subscribe(cls, id: UUID, spec: Spec, *, sealed_secret: str, at: datetime, actor: Actor, correlation_id: str) -> Webhook:  # noqa: A002
        return cls._create(cls.Subscribed, id=id, timestamp=at, spec=spec.record(), secret=sealed_secret,
                           actor=actor, correlation_id=correlation_id)

    def signing_keys(self, at: datetime) -> list[SigningKey]:
        return [key for key in self.keys if key.signs_at(at)]

    # -- commands: each records nothing when there is nothing to change -------------

    def change(self, spec: Spec, *, at: datetime, actor: Actor, correlation_id: str) -> bool:
        current, wanted = self.spec.record(), spec.record()
        changes = {name: value for name, value in wanted.items() if current[name] != value}
        if not changes:
            return False
        self.trigger_event(self.Changed, timestamp=at, changes=changes, actor=actor, correlation_id=correlation_id)
        return True

    def pause(self, *, at: datetime, actor: Actor, correlation_id: str) -> bool:
        if self.status == Status.DISABLED:
            raise WebhookStateConflict("the subscription is disabled; resume it to deliver again")
        if self.status == Status.PAUSED:
            return False
        self.trigger_event(self.Paused, timestamp=at, actor=actor, correlation_id=correlation_id)
        return True

    def resume(self, *, at: datetime, actor: Actor, correlation_id: str) -> bool:
        if self.status == Status.ACTIVE:
            return False
        self.trigger_event(self.Resumed, timestamp=at, actor=actor, correlation_id=correlation_id)
        return True

    def delete(self, *, at: datetime, actor: Actor, correlation_id: str) -> None:
        self.trigger_event(self.Deleted, timestamp=at, actor=actor, correlation_id=correlation_id)

    def rotate_secret(self, sealed_secret: str, *, overlap: timedelta, at: datetime, actor: Actor, correlation_id: str) -> None:
        self.trigger_event(self.SecretRotated, timestamp=at, secret=sealed_secret, previous_until=at + overlap,
                           actor=actor, correlation_id=correlation_id)

    def disable(self, *, reason: str, detail: str, event_id: str, at: datetime, actor: Actor, correlation_id: str) -> bool:
        """Stop deliveries: the notifier's call after a 410 or the last retry, naming the
        event whose delivery decided it. A disabled or deleted one has nothing to stop."""
        if self.status not in (Status.ACTIVE, Status.PAUSED):
            return False
        self.trigger_event(self.Disabled, timestamp=at, reason=reason, detail=detail, event_id=event_id,
                           description=self.spec.description, actor=actor, correlation_id=correlation_id)
        return True

    def request_redelivery(
        self, request_id: str, *, event_id: str | None, since: datetime | None, at: datetime, actor: Actor, correlation_id: str
    ) -> None:
        if (event_id is None) == (since is None):
            raise InvalidWebhook("event_id", "give either event_id or since")
        self.trigger_event(self.RedeliveryRequested, timestamp=at, request_id=request_id, event_id=event_id,
                           since=since, actor=actor, correlation_id=correlation_id)

    def complete_redelivery(self, request_id: str, *, enqueued: int, at: datetime, actor: Actor, correlation_id: str) -> bool:
        if request_id not in self.redeliveries:
            return False
        self.trigger_event(self.RedeliveryEnqueued, timestamp=at, request_id=request_id, enqueued=enqueued,
                           actor=actor, correlation_id=correlation_id)
        return True

    # -- events: state assignment only -------------------------------------------

    class Changed(Event):
        changes: dict[str, Any]  # only the terms that changed, in recorded form

        def apply(self, webhook: Webhook) -> None:
            webhook.spec = spec_from_record(webhook.spec.record() | self.changes)

    class Paused(Event):
        def apply(self, webhook: Webhook) -> None:
            webhook.status = Status.PAUSED

    class Resumed(Event):
        def apply(self, webhook: Webhook) -> None:
            webhook.status = Status.ACTIVE
            webhook.disabled_reason = None

    class Deleted(Event):
        def apply(self, webhook: Webhook) -> None:
            webhook.status = Status.DELETED

    class SecretRotated(Event):
        secret: str  # sealed
        # Every secret signing until now signs until then at the latest, overlapping the
        # new one; an overlap of zero (a leaked secret) ends them all at once.
        previous_until: datetime

        def apply(self, webhook: Webhook) -> None:
            still_signing = [key for key in webhook.keys if key.signs_at(self.timestamp)]
            webhook.keys = [
                replace(key, until=min(key.until or self.previous_until, self.previous_until)) for key in still_signing
            ] + [SigningKey(self.secret)]

    class Disabled(Event):
        internal: ClassVar[bool] = False  # public: ops alerting may subscribe to webhook.disabled
        reason: str  # "gone" (the receiver answered 410) or "retries_exhausted"
        detail: str
        event_id: str  # the delivery that decided it
        description: str

        def apply(self, webhook: Webhook) -> None:
            webhook.status = Status.DISABLED
            webhook.disabled_reason = f"{self.reason}: {self.detail}"

    class RedeliveryRequested(Event):
        request_id: str
        event_id: str | None  # one message again...
        since: datetime | None  # ...or every event the subscription wants from this instant on

        def apply(self, webhook: Webhook) -> None:
            webhook.redeliveries[self.request_id] = {
                "event_id": self.event_id, "since": self.since.isoformat() if self.since else None,
                "requested_at": self.timestamp.isoformat(),
            }

    class RedeliveryEnqueued(Event):
        request_id: str
        enqueued: int

        def apply(self, webhook: Webhook) -> None:
            webhook.redeliveries.pop(self.request_id, None)
