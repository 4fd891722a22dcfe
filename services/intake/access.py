"""The gate every route but health and docs passes: who is calling (their API key),
whether their role allows the route, whether their rate allows another request.

Routes declare what they need with `gate.require("<permission>")` and receive a
`Context`: the caller's principal, the actor to record and the correlation id. Scope
(which tickets, which customers) is the route's to apply through the context, since
only the route knows what it is about to show or change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import Depends, Header, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.access import Principal
from shared.clock import Clock
from shared.desk import TicketDesk
from shared.domain.errors import Forbidden, RateLimited, TicketNotFound
from shared.domain.ticket import Actor, Ticket
from shared.keys import Keyring
from shared.rate_limit import RateLimits
from shared.settings import Settings
from shared.store import EventStore

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


@dataclass(frozen=True)
class Context:
    """Who is asking and under which correlation id; recorded on every event."""

    principal: Principal
    correlation_id: str

    @property
    def actor(self) -> Actor:
        return self.principal.actor

    def ticket(self, desk: TicketDesk, reference: str | UUID) -> Ticket:
        """The ticket as it stands, if the caller's scope includes it; else not found."""
        ticket = desk.get(reference)
        if not self.principal.sees(ticket):
            raise TicketNotFound(str(reference))
        return ticket

    def serve(self, customer: str, *, field: str = "customer") -> None:
        """Refuse to act for a customer the key does not serve."""
        if not self.principal.serves(customer):
            raise Forbidden(f"{field}: this key serves only {', '.join(sorted(self.principal.customers))}")

    def act_as(self, engineer: str | None, *, field: str = "engineer") -> None:
        """An engineer key acts as its own engineer, never as a colleague."""
        if self.principal.engineer is not None and engineer != self.principal.engineer:
            raise Forbidden(f"{field}: an engineer key acts only as {self.principal.engineer}")

    @property
    def customers(self) -> frozenset[str] | None:
        """The customers the caller may see; None: every customer."""
        return self.principal.customers if self.principal.scoped_to_customers else None


class Gate:
    def __init__(self, keyring: Keyring, limits: RateLimits) -> None:
        self.keyring = keyring
        self.limits = limits

    @classmethod
    def configure(cls, settings: Settings, store: EventStore, clock: Clock) -> Gate:
        return cls(Keyring(store, clock), RateLimits(settings.rate_limit, settings.rate_burst))

    def require(self, permission: str) -> Any:
        """A dependency giving the caller's Context, or refusing: 401 without a valid key,
        429 past the key's rate, 403 when the key's role lacks `permission`."""

        # A coroutine, so FastAPI runs it on the loop: the key's read is the only trip to
        # a thread, shared with every request presenting a key at the same moment.
        async def caller(
            response: Response,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            x_correlation_id: Annotated[str | None, Header(max_length=200)] = None,
        ) -> Context:
            principal = await self.keyring.authenticate(credentials.credentials if credentials else "")
            wait = self.limits.take(principal.key_id, principal.rate_per_second)
            if wait:
                raise RateLimited(math.ceil(wait))
            if not principal.may(permission):
                raise Forbidden(f"{principal.role} keys may not do this ({permission})")
            correlation_id = x_correlation_id or str(uuid4())
            response.headers["X-Correlation-Id"] = correlation_id
            return Context(principal, correlation_id)

        caller.permission = permission  # type: ignore[attr-defined]  # read by the permission matrix test
        return Depends(caller)

    def context(self, permission: str) -> Any:
        """`Annotated[Context, gate.require(permission)]`, for a route's signature."""
        return Annotated[Context, self.require(permission)]
