"""Who may do what: the permissions of each role, and which tickets a key can see.

Pure rules, no I/O: the API asks `may` before it runs a route and `sees` before it
shows or changes a ticket. A permission is a plain string naming what it guards;
the ticket commands are `tickets:<command>` and the engineers' ticket actions
`dispatch:<action>`, each with the aggregate method's name.

A ticket outside a key's scope is treated as if it did not exist (404), so an
integration key cannot even learn that another customer's ticket number is taken.
"""
from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from shared.domain.api_key import ACTOR_KIND, ApiKey, Role
from shared.domain.ticket import Actor, Ticket

TICKET_COMMANDS = (
    "acknowledge", "comment", "change_severity", "await_customer", "record_customer_response", "arrive", "resolve",
    "confirm", "reopen", "close", "cancel", "request_visit", "record_callback", "escalate",
)
DISPATCH_ACTIONS = ("accept", "decline", "depart", "arrive", "hand_back", "complain", "request_spare")


def _tickets(*commands: str) -> frozenset[str]:
    return frozenset(f"tickets:{c}" for c in commands)


def _dispatch(*actions: str) -> frozenset[str]:
    return frozenset(f"dispatch:{a}" for a in actions)


# What each role may do. Everything not listed is refused (403).
_READ_ALL = frozenset({"tickets:read", "feed:read", "reports:read", "sla:quote", "contracts:read", "roster:read"})
PERMISSIONS: dict[Role, frozenset[str]] = {
    # A customer's system reports incidents and speaks for the customer: comments,
    # answers, confirms or reopens, withdraws, complains about an engineer.
    Role.INTEGRATION: frozenset({
        "tickets:open", "tickets:read", "feed:read", "reports:read", "sla:quote", "contracts:read",
        "webhooks:read", "webhooks:write",
    }) | _tickets("comment", "record_customer_response", "confirm", "reopen", "cancel") | _dispatch("complain"),
    # An engineer works the tickets they are on; withdrawing one or confirming for the
    # customer is not theirs to do.
    Role.ENGINEER: frozenset({"tickets:read", "sla:quote", "roster:read"})
    | _tickets(*(c for c in TICKET_COMMANDS if c not in ("confirm", "cancel")))
    | _dispatch(*(a for a in DISPATCH_ACTIONS if a != "complain")),
    Role.AGENT: _READ_ALL | {"tickets:open", "store:verify", "stock:move"}
    | _tickets(*TICKET_COMMANDS) | _dispatch(*DISPATCH_ACTIONS),
    Role.AUDITOR: _READ_ALL | {"store:verify", "webhooks:read", "policy:read"},
}
PERMISSIONS[Role.ADMIN] = frozenset().union(*PERMISSIONS.values()) | {
    "keys:manage", "contracts:write", "roster:write",
}


@dataclass(frozen=True)
class Principal:
    """The holder of a key, as the API sees them on each request."""

    key_id: UUID
    name: str
    role: Role
    customers: frozenset[str] = frozenset()  # integration keys: the customers served
    engineer: str | None = None  # engineer keys: whose key it is
    rate_per_second: float | None = None  # None: the service's default

    @classmethod
    def of(cls, key: ApiKey) -> Principal:
        return cls(key.id, key.name, key.role, frozenset(key.customers), key.engineer, key.rate_per_second)

    @property
    def actor(self) -> Actor:
        """Recorded on every event this key causes: an engineer by their id, others by the key's name."""
        return {"kind": ACTOR_KIND[self.role], "id": self.engineer or self.name, "key": str(self.key_id)}

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    @property
    def scoped_to_customers(self) -> bool:
        return self.role is Role.INTEGRATION

    def serves(self, customer: str) -> bool:
        """Whether data about this customer (tickets, contracts, reports) is the key's business."""
        return not self.scoped_to_customers or customer in self.customers

    def sees(self, ticket: Ticket) -> bool:
        if self.role is Role.ENGINEER:
            return self.engineer in ticket.engineers
        return self.serves(ticket.customer)
