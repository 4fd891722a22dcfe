"""The event store: one eventsourcing Application shared by every process.

Every process opens the same store (same application name, hence the same table),
on SQLite by default or PostgreSQL in production.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar
from uuid import UUID, uuid5

import psycopg
import sqlalchemy.exc
from eventsourcing.application import Application, Repository
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError as EventsourcingIntegrityError
from eventsourcing.persistence import InternalError as EventsourcingInternalError
from eventsourcing.persistence import OperationalError as EventsourcingOperationalError
from eventsourcing.persistence import ProgrammingError as EventsourcingProgrammingError
from eventsourcing.persistence import Notification, StoredEvent, Transcoder
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg.sql import SQL, Identifier

from shared.settings import persistence_env
from shared.stored_json import StoredJSON


def mutated(aggregate: Any, events: Iterable[Any]) -> Any:
    """`aggregate` with `events` applied: eventsourcing's project_aggregate without its
    check that each event can mutate, a runtime Protocol isinstance of about 11 µs an
    event on Python 3.11, paid for every event of every stream a worker reads."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


Share = tuple[int, int]  # (k, n): the k-th of n shares of the log's streams


class EventStore(Application[UUID]):
    name = "Ticketing"

    def construct_repository(self) -> Repository[UUID]:
        repository = super().construct_repository()
        repository.get = partial(repository.get, projector_func=mutated)  # type: ignore[method-assign]
        return repository

    def construct_transcoder(self) -> Transcoder:
        transcoder = StoredJSON()
        self.register_transcodings(transcoder)
        return transcoder

    def decode(self, stored: Any) -> DomainEventProtocol[UUID]:
        """A stored event or notification back to its domain event."""
        return self.mapper.to_domain_event(stored)

    def get_many(self, ids: Collection[UUID]) -> dict[UUID, Aggregate]:
        """The aggregates of `ids` that exist, as they stand, read in one query: a
        worker settling many streams at once pays one round trip, not one each."""
        streams: dict[UUID, list[StoredEvent]] = {}
        for stored in self._select_streams(ids):
            streams.setdefault(stored.originator_id, []).append(stored)  # type: ignore[arg-type]
        aggregates = {}
        for originator_id, stored in streams.items():
            aggregate = mutated(None, (self.mapper.to_domain_event(event) for event in stored))
            if aggregate is not None:
                aggregates[originator_id] = aggregate
        return aggregates

    def last_versions(self, ids: Collection[UUID]) -> dict[UUID, int]:
        """How far each stream of `ids` has got (0 if it has no events), in one query."""
        rows = self._query_streams("originator_id, max(originator_version) AS version", "GROUP BY originator_id", ids)
        return dict.fromkeys(ids, 0) | {originator_id: row["version"] for originator_id, row in rows}

    def refresh_statistics(self) -> None:
        """Bring PostgreSQL's row statistics of the events table up to date before
        reading the whole log. A batch of a read model's events is found by walking
        the notification id index in order; with no statistics (after a bulk load or an
        import, or with autovacuum off or behind) the planner takes the rest of the log
        for a few rows and sorts all of it for every batch instead (measured: a rebuild
        of 200,000 events at 38k/s without, 58k/s with). SQLite plans without them."""
        recorder = self.recorder
        if isinstance(recorder, PostgresAggregateRecorder):
            with recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(SQL("ANALYZE {}.{}").format(
                    Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)))

    def select_share(self, start: int, limit: int, *, stop: int, topics: Sequence[str], share: Share) -> list[Notification]:
        """Like the recorder's `select_notifications` (after `start`, up to `stop`, of
        `topics`), keeping only the streams of one share of the log (PostgreSQL only):
        share (k, n) holds the streams whose id's last byte is k modulo n, so n
        processes replaying a share each see every stream exactly once, whole."""
        recorder = self.recorder
        assert isinstance(recorder, PostgresAggregateRecorder), "a share of the log is read on PostgreSQL only"
        statement = SQL(
            "SELECT * FROM {}.{} WHERE notification_id > %s AND notification_id <= %s AND topic = ANY(%s)"
            " AND get_byte(uuid_send(originator_id), 15) %% %s = %s ORDER BY notification_id LIMIT %s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        part, parts = share
        with recorder.datastore.transaction(commit=False) as cursor:
            # The planner cannot tell how few rows the share's condition keeps and plans
            # parallel workers for each batch: starting them cost more than the read.
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cursor.execute(statement, [start, stop, list(topics), parts, part, limit], prepare=True)
            return [Notification(id=row["notification_id"], originator_id=row["originator_id"],
                                 originator_version=row["originator_version"], topic=row["topic"], state=bytes(row["state"]))
                    for row in cursor.fetchall()]

    def _select_streams(self, ids: Collection[UUID]) -> list[StoredEvent]:
        rows = self._query_streams("originator_id, originator_version, topic, state",
                                   "ORDER BY originator_id, originator_version", ids)
        return [StoredEvent(originator_id, row["originator_version"], row["topic"], bytes(row["state"]))
                for originator_id, row in rows]

    def _query_streams(self, columns: str, tail: str, ids: Collection[UUID]) -> list[tuple[UUID, Any]]:
        """`SELECT columns ... WHERE originator_id IN ids tail` on the events table,
        each row with its originator id as a UUID, on either database."""
        recorder = self.recorder
        if not ids:
            return []
        if isinstance(recorder, PostgresAggregateRecorder):
            statement = SQL(f"SELECT {columns} FROM {{}}.{{}} WHERE originator_id = ANY(%s) {tail}").format(
                Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(statement, [list(ids)], prepare=True)
                return [(row["originator_id"], row) for row in cursor.fetchall()]
        assert isinstance(recorder, SQLiteAggregateRecorder), f"no multi-stream read for {type(recorder).__name__}"
        params = [i.hex if recorder.datastore.originator_id_type == "uuid" else str(i) for i in ids]
        marks = ",".join("?" * len(params))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT {columns} FROM {recorder.events_table_name} WHERE originator_id IN ({marks}) {tail}", params)
            return [(UUID(row["originator_id"]), row) for row in cursor.fetchall()]


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


def open_store(database_url: str, *, cached: int = 0) -> EventStore:
    """`cached`: how many aggregates to keep in memory once read. A cached aggregate is
    read again as its events since (one query, those events decoded), so it is never
    stale, and handed out as a copy, so a command that fails leaves the cache as it was.
    For streams read over and over that only grow (an engineer takes every ticket on
    its own stream): without it, each read decodes the whole history."""
    env = persistence_env(database_url)
    if cached:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(cached)
    if "POSTGRES_SCHEMA" not in env:
        return surviving_start_race(lambda: EventStore(env=env))
    with _one_starter_at_a_time(env) as conn:
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(env["POSTGRES_SCHEMA"])))
        return EventStore(env=env)


def reopened(store: EventStore) -> EventStore:
    """The same store with connections of its own, for a forked process: a child must
    not talk over its parent's connections (PostgreSQL only)."""
    env = dict(store.env)
    with _one_starter_at_a_time(env):
        return EventStore(env=env)


# Any fixed number: the PostgreSQL advisory lock every process takes while it creates
# the store's or a projection's tables.
START_LOCK = 0x7469636B


@contextmanager
def _one_starter_at_a_time(env: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:
    """A connection holding PostgreSQL's advisory lock for starting up, released when
    it closes. Processes starting together on a fresh database would each create the
    same schema, tables, indexes and functions; PostgreSQL's catalogue lets only one
    do so at a time ("tuple concurrently updated" for the others), and retrying in
    step loses again. Taking turns makes the first create and the rest find it made."""
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        autocommit=True,
    ) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [START_LOCK])
        yield conn


def event_id(originator_id: UUID, version: int) -> UUID:
    """A stable id per recorded event: the same event always gets the same id, so
    JetStream (Nats-Msg-Id) and webhook receivers can drop repeats."""
    return uuid5(originator_id, str(version))
