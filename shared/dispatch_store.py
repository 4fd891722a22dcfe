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
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

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


class ReadModels:
    """The engineer and spare unit lists, owned by the dispatch process: caught up before
    every decision and every list, so each reads at least what this process recorded."""

    def __init__(self, store: EventStore, engine: Engine) -> None:
        self.store = store
        self.engineers = EngineerListProjection(store, engine)
        self.units = SpareUnitListProjection(store, engine)
        self._lock = threading.Lock()  # the API's threads and the worker share one process
        self._caught_up_to = -1

    def refresh(self) -> None:
        with self._lock:
            # One cheap read when nothing was recorded since the last catch-up; else the
            # bound both projections catch up to.
            latest = self.store.recorder.max_notification_id() or 0
            if latest == self._caught_up_to:
                return
            for projection in (self.engineers, self.units):
                for attempt in range(1, CATCH_UP_ATTEMPTS + 1):
                    try:
                        while projection.catch_up(latest=latest):
                            pass
                        break
                    except (IntegrityError, OperationalError) as error:
                        # Another dispatch instance wrote the same rows or position at the
                        # same moment (a deadlock, a duplicate first position, a busy
                        # SQLite file); the rows are the aggregates' own state, so
                        # catching up again converges.
                        if attempt == CATCH_UP_ATTEMPTS:
                            raise
                        log.info("catching up %s again after %s", projection.name, type(error).__name__)
            self._caught_up_to = latest


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


def instant(clock: Clock, *aggregates: Aggregate) -> datetime:
    """Now, but never before the last event of a stream about to be written: a replica
    whose clock lags must not record an event before the one it follows."""
    return max([clock.now(), *(a.modified_on for a in aggregates)])
