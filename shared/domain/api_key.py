"""The ApiKey aggregate: one stream per key a client presents as `Authorization: Bearer`.

The key itself is never recorded: the stream holds its SHA-256 digest, and the
stream's id is derived from that digest, so finding the key a request presents is
one read by id, with nothing to scan. A random key of 256 bits needs no slow hash:
there is nothing to guess from the digest.

A key has a role and a scope: the customers an integration key serves, the engineer
an engineer key belongs to. Revocation is final; the stream keeps who issued and who
revoked the key, and why.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from shared.domain.chain import Chained
from shared.domain.contract import CODE_PATTERN
from shared.domain.errors import InvalidKey
from shared.domain.ticket import Actor

NAME_MAX = 200
CUSTOMERS_MAX = 100
_NAME = re.compile(r"^[^\s:][^\x00-\x1f:]{0,199}$")  # recorded as the actor's id: no ':' or control characters
_ENGINEER = re.compile(CODE_PATTERN)


class Role(StrEnum):
    INTEGRATION = "integration"  # a customer's or partner's system: its own customers' tickets
    ENGINEER = "engineer"  # one engineer: the tickets they are on
    AGENT = "agent"  # the support desk: every ticket
    AUDITOR = "auditor"  # reads everything, writes nothing
    ADMIN = "admin"  # keys, contracts, engineers, spare units, webhooks; and all of the above


# The actor kind recorded on every event a key's holder causes.
ACTOR_KIND = {
    Role.INTEGRATION: "client", Role.ENGINEER: "engineer", Role.AGENT: "agent",
    Role.AUDITOR: "auditor", Role.ADMIN: "admin",
}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id(secret: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"urn:ticketing:api-key:{digest(secret)}")


def check_scope(role: Role, name: str, customers: tuple[str, ...], engineer: str | None) -> None:
    """The rules a key's terms obey, each naming the offending field."""
    if not _NAME.match(name):
        raise InvalidKey("name", f"1 to {NAME_MAX} characters, not starting with a space, without ':' or control characters")
    if role is Role.INTEGRATION and not customers:
        raise InvalidKey("customers", "an integration key serves at least one customer")
    if role is not Role.INTEGRATION and customers:
        raise InvalidKey("customers", f"only integration keys are limited to customers, not {role} keys")
    if len(customers) > CUSTOMERS_MAX or any(not c.strip() or len(c) > NAME_MAX for c in customers):
        raise InvalidKey("customers", f"at most {CUSTOMERS_MAX} names of 1 to {NAME_MAX} characters")
    if role is Role.ENGINEER and not (engineer and _ENGINEER.match(engineer)):
        raise InvalidKey("engineer", "an engineer key names its engineer's id, e.g. E-017")
    if role is not Role.ENGINEER and engineer is not None:
        raise InvalidKey("engineer", f"only engineer keys name an engineer, not {role} keys")


class ApiKey(Chained):
    class Event(Chained.Event):
        actor: Actor
        correlation_id: str

    class Issued(Event, Aggregate.Created):
        digest: str
        name: str
        role: str
        customers: list[str]
        engineer: str | None
        rate_per_second: float | None

    def __init__(
        self, *, digest: str, name: str, role: str, customers: list[str], engineer: str | None,
        rate_per_second: float | None, actor: Actor, correlation_id: str,
    ) -> None:
        self.digest = digest
        self.name = name
        self.role = Role(role)
        self.customers = tuple(customers)
        self.engineer = engineer
        self.rate_per_second = rate_per_second
        self.issued_by = actor
        self.revoked_at: datetime | None = None
        self.revoked_reason: str | None = None

    @classmethod
    def issue(
        cls, secret: str, *, name: str, role: Role, customers: tuple[str, ...] = (), engineer: str | None = None,
        rate_per_second: float | None = None, at: datetime, actor: Actor, correlation_id: str,
    ) -> ApiKey:
        check_scope(role, name, customers, engineer)
        return cls._create(
            cls.Issued, id=key_id(secret), timestamp=at, digest=digest(secret), name=name, role=str(role),
            customers=sorted(set(customers)), engineer=engineer, rate_per_second=rate_per_second,
            actor=actor, correlation_id=correlation_id,
        )

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def revoke(self, *, reason: str, at: datetime, actor: Actor, correlation_id: str) -> bool:
        """Revoke for good; False (and no event) when already revoked."""
        if not self.active:
            return False
        self.trigger_event(self.Revoked, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id)
        return True

    class Revoked(Event):
        reason: str

        def apply(self, key: ApiKey) -> None:
            key.revoked_at = self.timestamp
            key.revoked_reason = self.reason
