"""The shared machinery of a read model holding one row per aggregate: follow the
notification log, evolve each aggregate by its own events, upsert its row, and save
the position in the same transaction (exactly-once).

Four things keep a rebuild near the speed of reading the log: only the aggregate's own
event types are read (the store filters by topic, so a dispatch process catching up
its engineer list during a storm of tickets decodes no ticket event), the upsert is
compiled once and run for a whole batch of rows at a time, the aggregates evolved
by recent batches are kept (up to RECENT), so a stream whose events straddle batches
is carried on from memory instead of replayed from the store, and a replay reads the
next batch in a thread while it applies this one (the read waits on the database).
"""
from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Executor, Future
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic
from sqlalchemy import Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from shared.projections.tracking import create_tables, read_position, save_position
from shared.store import EventStore

RECENT = 10_000  # aggregates kept between batches
LIVE_BATCH = 500  # events a catch-up applies at most in one transaction


class AggregateRows:
    name: ClassVar[str]  # position name in projection_positions
    table: ClassVar[Table]
    key: ClassVar[str]  # the table's primary key column
    events: ClassVar[type[Aggregate.Event]]  # the aggregate's event base class

    def __init__(self, store: EventStore, engine: Engine) -> None:
        self.store = store
        self.engine = engine
        create_tables(engine)
        insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(self.table)
        self._upsert = insert.on_conflict_do_update(
            index_elements=[self.key], set_={c.name: insert.excluded[c.name] for c in self.table.c if c.name != self.key}
        )
        self._recent: OrderedDict[UUID, Aggregate] = OrderedDict()
        self._topics = sorted(get_topic(kind) for kind in _kinds(self.events))
        # Saved position → a later one with none of our events in between (only ever
        # one entry: it holds for as long as the saved position is that one).
        self._passed: dict[int, int] = {}
        # How far the rows reflect the log as of this process's last look: further than
        # the saved position when that look found none of our events beyond it.
        self.seen_up_to = 0
        # The batch after a full one, being read while that one is applied (a replay
        # only): (its start, the read of (notifications, the log's end it stopped at)).
        self._ahead: tuple[int, Future[tuple[list[Notification], int]]] | None = None

    def row(self, aggregate: Any) -> dict[str, Any]:
        raise NotImplementedError

    def catch_up(self, batch: int = LIVE_BATCH, *, latest: int | None = None, reader: Executor | None = None) -> int:
        """Apply the next batch of the aggregate's events; returns how many it applied
        (0: caught up with everything recorded when it looked). `latest`: the log's last
        position, when the caller has just read it. `reader`: a thread to read the next
        batch in while this one is applied, when more batches are sure to follow."""
        with self.engine.begin() as conn:
            saved = read_position(conn, self.name)
            position = self._passed.get(saved, saved)
            # The store commits positions in order, so once fewer than `batch` of our
            # events lie between here and the last position, everything up to it is
            # seen and the next look starts there. With none of ours among them, that
            # is only remembered, not written: a dispatch process looks before every
            # decision, and a commit each time would cost more than the look.
            notifications, latest = self._batch_after(position, batch, latest)
            reached = latest if len(notifications) < batch else notifications[-1].id
            if reader is not None and len(notifications) == batch:
                self._ahead = (reached, reader.submit(self._read_batch, reached, batch, None))
            if not notifications:
                self._passed = {saved: reached}
                self.seen_up_to = reached
                return 0
            evolved: dict[UUID, Aggregate] = {}
            for notification in notifications:
                event = self.store.decode(notification)
                evolved[event.originator_id] = self._evolve(evolved.get(event.originator_id), event)
            conn.execute(self._upsert, [self.row(aggregate) for aggregate in evolved.values()])
            save_position(conn, self.name, reached)
        self.seen_up_to = reached
        # Kept only once committed: a failed batch leaves nothing ahead of the saved position.
        for aggregate_id, aggregate in evolved.items():
            self._recent[aggregate_id] = aggregate
            self._recent.move_to_end(aggregate_id)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return len(notifications)

    def _batch_after(self, position: int, batch: int, latest: int | None) -> tuple[list[Notification], int]:
        """Our next `batch` events after `position`, up to `latest` (or the log's end as
        of now), and that end: the batch read ahead if it starts there."""
        if self._ahead is not None:
            (start, reading), self._ahead = self._ahead, None
            if start == position:
                return reading.result()
        return self._read_batch(position, batch, latest)

    def _read_batch(self, position: int, batch: int, latest: int | None) -> tuple[list[Notification], int]:
        if latest is None:
            latest = self.store.recorder.max_notification_id() or 0
        notifications = self.store.recorder.select_notifications(
            position, batch, stop=latest, topics=self._topics, inclusive_of_start=False
        )
        return notifications, latest

    def catch_up_to(self, latest: int, batch: int = LIVE_BATCH) -> None:
        """Apply every event of ours up to position `latest` (the log's end, just read),
        a batch at a time. It stops once the rows have seen that far, without another
        look only to find nothing left: a dispatch decision pays every look."""
        while self.seen_up_to < latest:
            self.catch_up(batch, latest=latest)

    def _evolve(self, aggregate: Aggregate | None, event: Aggregate.Event) -> Aggregate:
        # The batch may start in the middle of a stream: carry on from the state a recent
        # batch left, or else the stored state before this event.
        if aggregate is None and event.originator_version > 1:
            kept = self._recent.pop(event.originator_id, None)
            if kept is not None and kept.version == event.originator_version - 1:
                aggregate = kept
            else:
                aggregate = self.store.repository.get(event.originator_id, version=event.originator_version - 1)
        return event.mutate(aggregate)


def _kinds(base: type) -> set[type]:
    """Every event class deriving from `base` (the aggregate's own event types)."""
    kinds = set()
    for kind in base.__subclasses__():
        kinds |= {kind} | _kinds(kind)
    return kinds
