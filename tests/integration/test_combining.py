"""Group commit on real stores (SQLite and PostgreSQL): what many threads save at once
is all saved, and two writers of the same stream version never both succeed."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import RecordConflictError

from shared.combining import GroupCommit
from shared.store import EventStore


class Counter(Aggregate):
    def __init__(self) -> None:
        self.count = 0

    @event("Counted")
    def count_one(self) -> None:
        self.count += 1


def test_concurrent_saves_are_all_recorded(store: EventStore) -> None:
    saves = GroupCommit(store)
    counters = [Counter() for _ in range(64)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda counter: saves.save(counter), counters))
    assert all(store.repository.get(counter.id).version == 1 for counter in counters)


def test_two_writers_of_one_version_one_wins_and_the_other_retries(store: EventStore) -> None:
    first = Counter()
    store.save(first)
    saves = GroupCommit(store)
    together = threading.Barrier(2)

    def count_once() -> int:
        """Count one on the stored counter, reading again after a conflict; returns the
        conflicts met on the way."""
        conflicts = 0
        while True:
            counter = store.repository.get(first.id)
            counter.count_one()
            if conflicts == 0:
                together.wait()  # both have read the same version
            try:
                saves.save(counter, *[Counter() for _ in range(3)])  # other streams in the same commit
                return conflicts
            except RecordConflictError:
                conflicts += 1

    with ThreadPoolExecutor(2) as pool:
        conflicts = list(pool.map(lambda _: count_once(), range(2)))
    assert sorted(conflicts) == [0, 1]
    assert store.repository.get(first.id).count == 2
