"""The event store: one eventsourcing Application shared by every process.

Every process opens the same store (same application name, hence the same table),
on SQLite by default or PostgreSQL in production.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID, uuid5

import psycopg
import sqlalchemy.exc
from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError as EventsourcingIntegrityError
from eventsourcing.persistence import InternalError as EventsourcingInternalError
from eventsourcing.persistence import OperationalError as EventsourcingOperationalError
from eventsourcing.persistence import ProgrammingError as EventsourcingProgrammingError

from shared.settings import persistence_env


class EventStore(Application[UUID]):
    name = "Ticketing"

    def decode(self, stored: Any) -> DomainEventProtocol[UUID]:
        """A stored event or notification back to its domain event."""
        return self.mapper.to_domain_event(stored)


T = TypeVar("T")
_MAYBE_COLLISIONS = (
    EventsourcingOperationalError, EventsourcingInternalError, EventsourcingProgrammingError,
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError,
)
# What the loser of a start-up race is told, besides a unique violation.
_RACE_LOST = ("already exists", "tuple concurrently updated")
_COLLISIONS = (EventsourcingIntegrityError, psycopg.errors.UniqueViolation, sqlalchemy.exc.IntegrityError, *_MAYBE_COLLISIONS)
_START_ATTEMPTS = 5
_START_RETRY_SECONDS = 0.2


def surviving_start_race(make: Callable[[], T]) -> T:
    """`make()`, tried again when it loses a start-up race: on a fresh database every
    process creates the same schema and tables, and two at once collide (PostgreSQL: a
    unique violation in the catalogue, "relation ... already exists" or "tuple
    concurrently updated"; SQLite: "table ... already exists"); the loser finds them
    made on the next try."""
    for attempt in range(1, _START_ATTEMPTS):
        try:
            return make()
        except _COLLISIONS as error:
            if isinstance(error, _MAYBE_COLLISIONS) and not any(sign in str(error) for sign in _RACE_LOST):
                raise
            time.sleep(_START_RETRY_SECONDS * attempt)
    return make()  # the last try: its error, if any, is the answer


def open_store(database_url: str) -> EventStore:
    env = persistence_env(database_url)
    if "POSTGRES_SCHEMA" in env:
        surviving_start_race(lambda: _ensure_schema(env))
    return surviving_start_race(lambda: EventStore(env=env))


def _ensure_schema(env: dict[str, str]) -> None:
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        autocommit=True,
    ) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(env["POSTGRES_SCHEMA"])))


def event_id(originator_id: UUID, version: int) -> UUID:
    """A stable id per recorded event: the same event always gets the same id, so
    JetStream (Nats-Msg-Id) and webhook receivers can drop repeats."""
    return uuid5(originator_id, str(version))
