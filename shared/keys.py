"""The keyring: issue, revoke and check the API keys every HTTP request presents.

Checking reads the key's own stream (by id, the id derived from the key's digest;
the keys presented at the same moment in one query), so a revocation holds for every
process the moment it is recorded.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from shared.access import Principal
from shared.clock import Clock
from shared.combining import Combiner
from shared.domain.api_key import ApiKey, Role, digest, key_id
from shared.domain.errors import KeyNotFound, Unauthenticated
from shared.domain.ticket import Actor
from shared.store import EventStore

PREFIX = "tk_"
SECRET_MAX = 512  # longer than any key we issue; a longer bearer is refused before it is hashed


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class Keyring:
    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._lookups: Combiner[_Lookup] = Combiner(self._look_up)

    def issue(
        self, *, name: str, role: Role, customers: tuple[str, ...] = (), engineer: str | None = None,
        rate_per_second: float | None = None, secret: str | None = None, actor: Actor, correlation_id: str,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is not kept: show it once. With `secret` (an
        operator's TICKETING_ADMIN_KEY) issuing it again returns the recorded key."""
        secret = secret or new_secret()
        key = ApiKey.issue(
            secret, name=name, role=role, customers=customers, engineer=engineer, rate_per_second=rate_per_second,
            at=self.clock.now(), actor=actor, correlation_id=correlation_id,
        )
        try:
            self.store.save(key)
        except RecordConflictError:
            return self.get(key.id), secret
        return key, secret

    def get(self, key: UUID) -> ApiKey:
        try:
            found = self.store.repository.get(key)
        except AggregateNotFoundError:
            raise KeyNotFound(str(key)) from None
        if not isinstance(found, ApiKey):
            raise KeyNotFound(str(key))
        return found

    def revoke(self, key: UUID, *, reason: str, actor: Actor, correlation_id: str) -> ApiKey:
        found = self.get(key)
        if found.revoke(reason=reason, at=max(self.clock.now(), found.modified_on), actor=actor,
                        correlation_id=correlation_id):
            self.store.save(found)
        return found

    async def authenticate(self, secret: str) -> Principal:
        """The principal of an active key; Unauthenticated for anything else, always with
        the same words, so a caller learns nothing about keys it does not hold.

        The keys presented at the same moment are read together, in one query on one
        thread. Each read starts after its request arrived, so a key revoked by any
        process is refused from the next request on."""
        if not secret or len(secret) > SECRET_MAX:
            raise Unauthenticated("unknown or revoked API key")
        lookup = _Lookup(key_id(secret))
        await self._lookups.submit_async(lookup)
        if isinstance(lookup.outcome, BaseException):
            raise lookup.outcome
        key = lookup.key
        if key is None or not key.active or not hmac.compare_digest(key.digest, digest(secret)):
            raise Unauthenticated("unknown or revoked API key")
        return Principal.of(key)

    def _look_up(self, batch: list[_Lookup]) -> None:
        found = self.store.get_many({lookup.key_id for lookup in batch})
        for lookup in batch:
            key = found.get(lookup.key_id)
            lookup.key = key if isinstance(key, ApiKey) else None
            lookup.outcome = True


@dataclass
class _Lookup:
    """A presented key's id, waiting to be read with the others presented at the same time."""

    key_id: UUID
    key: ApiKey | None = None
    outcome: bool | BaseException | None = None  # True once read


BOOTSTRAP_ACTOR = {"kind": "service", "id": "bootstrap"}


def record_admin_key(keyring: Keyring, secret: str) -> None:
    """Record an operator's admin key (TICKETING_ADMIN_KEY); a key recorded before stays as it is."""
    keyring.issue(name="admin", role=Role.ADMIN, secret=secret, actor=BOOTSTRAP_ACTOR, correlation_id=str(uuid4()))


def first_admin_key(keyring: Keyring, *, marker: Path) -> str | None:
    """The admin key a fresh deployment starts with, when no operator gave one: issued
    on the first start only and returned to be printed that once, its id written to
    `marker` so later starts issue none."""
    if marker.exists():
        return None
    key, secret = keyring.issue(name="admin", role=Role.ADMIN, actor=BOOTSTRAP_ACTOR, correlation_id=str(uuid4()))
    marker.write_text(f"{key.id}\n")
    return secret
