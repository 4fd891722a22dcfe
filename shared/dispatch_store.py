"""How dispatch reads and writes: its read models, caught up on demand, and one save
of every stream a decision touches, retried from fresh reads on a conflict.

A decision (assign an engineer, reserve a unit) changes the ticket's stream and
the engineer's or unit's stream together, in one transaction. Optimistic
concurrency on each stream is what keeps an engineer from being booked past
capacity and a unit from being promised twice: when another dispatcher saved
first, the whole decision is taken again on what it recorded.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from shared.clock import Clock
from shared.domain.ticket import Actor
from shared.projections.engineer_list import EngineerListProjection
from shared.projections.spare_unit_list import SpareUnitListProjection
from shared.store import EventStore

log = logging.getLogger(__name__)

DISPATCH_ACTOR: Actor = {"kind": "service", "id": "dispatch"}
SAVE_ATTEMPTS = 20
CATCH_UP_ATTEMPTS = 5

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)


class Book(Protocol[A]):
    """Where an engineer or a unit is read by its code (shared/dispatch_roster.py)."""

    def stream_id(self, code: str) -> UUID: ...

    def get(self, code: str) -> A: ...


class ReadModels:
    """The engineer and spare unit lists, owned by the dispatch process: caught up before
    every decision and every list, so each reads at least what this process recorded."""

    def __init__(self, store: EventStore, engine: Engine) -> None:
        self.store = store
        self.engineers = EngineerListProjection(store, engine)
        self.units = SpareUnitListProjection(store, engine)
        self._lock = threading.Lock()  # the API's threads and the worker share one process

    def refresh(self, *, units: bool = True) -> None:
        """Catch up both lists, or only the engineers' for a caller that reads no unit (a
        staffing decision, until it lends one): each look costs round trips to the
        database, and under a storm those are most of a decision's time."""
        with self._lock:
            # One cheap read, and no look at a list that has seen everything up to it.
            latest = self.store.recorder.max_notification_id() or 0
            for projection in (self.engineers, self.units) if units else (self.engineers,):
                for attempt in range(1, CATCH_UP_ATTEMPTS + 1):
                    try:
                        projection.catch_up_to(latest)
                        break
                    except (IntegrityError, OperationalError) as error:
                        # Another dispatch instance wrote the same rows or position at the
                        # same moment (a deadlock, a duplicate first position, a busy
                        # SQLite file); the rows are the aggregates' own state, so
                        # catching up again converges.
                        if attempt == CATCH_UP_ATTEMPTS:
                            raise
                        log.info("catching up %s again after %s", projection.name, type(error).__name__)

    def known(self, stream_id: UUID) -> Aggregate | None:
        """An engineer as the engineer list last saw it (a copy), if it holds it: caught
        up before every decision, that is as fresh as a read of the engineer's stream,
        without the read. A change recorded since is a conflict at the decision's
        save, and the decision, taken again, catches up first. (Not units: a staffing
        decision does not catch up the unit list.)"""
        with self._lock:  # a catch-up evolves the aggregates it keeps in place
            return self.engineers.kept(stream_id)


def save_retrying(store: EventStore, decide: Callable[[], tuple[T, Sequence[Aggregate]]]) -> T:
    """Run `decide`, which reads fresh state and returns its result and the aggregates
    it changed, and save those in one transaction; on a conflict, decide again."""
    for _ in range(SAVE_ATTEMPTS):
        result, changed = decide()
        try:
            store.save(*changed)
        except RecordConflictError:
            continue
        return result
    raise RuntimeError(f"gave up after {SAVE_ATTEMPTS} conflicting attempts")


class Workspace:
    """The aggregates a batch of decisions reads and changes, each read once and held:
    two decisions of one batch that want the same engineer or unit change the same
    object, so the second sees what the first did (as if they ran one after the
    other), and one save records both."""

    def __init__(self, known: Callable[[UUID], Aggregate | None] = lambda _: None) -> None:
        """`known`: an aggregate already at hand (ReadModels.known), or None to read it."""
        self.held: dict[UUID, Any] = {}
        self._listed: dict[Hashable, Any] = {}
        self._known = known

    def hold(self, aggregate: A) -> A:
        return self.held.setdefault(aggregate.id, aggregate)

    def get(self, book: Book[A], code: str) -> A:
        stream_id = book.stream_id(code)
        if stream_id not in self.held:
            self.held[stream_id] = self._known(stream_id) or book.get(code)
        return self.held[stream_id]

    def listed(self, query: Hashable, read: Callable[[], T]) -> T:
        """A read-model query, asked once per batch: the tickets of one storm mostly
        share a site, so their candidates are one query (the caller corrects the rows
        by what is held)."""
        if query not in self._listed:
            self._listed[query] = read()
        return self._listed[query]


def instant(clock: Clock, *aggregates: Aggregate) -> datetime:
    """Now, but never before the last event of a stream about to be written: a replica
    whose clock lags must not record an event before the one it follows."""
    return max([clock.now(), *(a.modified_on for a in aggregates)])
