"""The shared machinery of a read model holding one row per aggregate: follow the
notification log, evolve each aggregate by its own events, upsert its row, and save
the position in the same transaction (exactly-once).

Four things keep a rebuild near the speed of reading the log: only the aggregate's own
event types are read (the store filters by topic, so a dispatch process catching up
its engineer list during a storm of tickets decodes no ticket event), the upsert is
compiled once and run for a whole batch of rows at a time, the aggregates evolved
by recent batches are kept (up to RECENT), so a stream whose events straddle batches
is carried on from memory instead of replayed from the store, and a replay reads the
next batch and writes the last one in threads while it evolves this one (the read and
the write wait on the database).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic
from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from shared.projections.tracking import create_tables, read_position, save_position
from shared.read_db import reading
from shared.store import EventStore, Share

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
        # Whether this process has read the saved position yet: it carries on from its
        # own after that (see catch_up).
        self._placed = False
        # How far the rows reflect the log as of this process's last look: further than
        # the saved position when that look found none of our events beyond it.
        self.seen_up_to = 0
        # The saved position as this process last read or wrote it: it moves exactly
        # when the rows change (a batch of our events is written with the position it
        # reached).
        self.committed = 0
        self.share: Share | None = None  # the streams kept, when only a share of them

    def row(self, aggregate: Any) -> dict[str, Any]:
        raise NotImplementedError

    def kept(self, aggregate_id: UUID) -> Aggregate | None:
        """A copy of the aggregate as a recent batch left it, if one did: it has every
        event of its stream up to `seen_up_to`, since the rows read all of them."""
        kept = self._recent.get(aggregate_id)
        return copy.deepcopy(kept) if kept is not None else None

    def catch_up(self, batch: int = LIVE_BATCH, *, latest: int | None = None) -> int:
        """Apply the next batch of the aggregate's events; returns how many it applied
        (0: caught up with everything recorded when it looked). `latest`: the log's last
        position, when the caller has just read it."""
        # The saved position is read at the first look only; from then on this process
        # carries on from where it got to, so a look costs no read of it (a dispatch
        # process looks before every decision). Another process keeping the same rows
        # (a second dispatch instance) may have applied some of the same events: this
        # one applies them again, to the same rows, and its kept aggregates stay whole.
        if not self._placed:
            with reading(self.engine) as conn:
                self.seen_up_to = self.committed = read_position(conn, self.name)
            self._placed = True
        # The store commits positions in order, so once fewer than `batch` of our
        # events lie between here and the last position, everything up to it is
        # seen and the next look starts there. With none of ours among them, that
        # is only remembered, not written: a commit each time would cost more than
        # the look. Only a write needs a transaction.
        notifications, latest = self._read_batch(self.seen_up_to, batch, latest)
        reached = _reached(notifications, batch, latest)
        if not notifications:
            self.seen_up_to = reached
            return 0
        evolved = self._evolved(notifications)
        self._commit([self.row(aggregate) for aggregate in evolved.values()], reached)
        self.seen_up_to = self.committed = reached
        self._keep(evolved)  # only once committed: a failed batch leaves nothing ahead of the saved position
        return len(notifications)

    def replay(self, batch: int, progress: Callable[[int], None] | None = None, *, stop: int | None = None) -> int:
        """Catch up with the whole log (or up to position `stop`), batch after batch, as
        a pipeline: while a batch is evolved, the next one is read in one thread and the
        one before is written in another (both wait on the database). Returns how many
        events it applied; `progress` hears each position committed. A write that fails
        stops the replay at the last commit, as a failed catch-up does."""
        with reading(self.engine) as conn:  # a rebuild has just set it back to the start
            position, replayed = read_position(conn, self.name), 0
        self.seen_up_to, self.committed, self._placed = position, position, True
        writing: Future[int] | None = None  # the position its commit reached
        with ThreadPoolExecutor(1, "replay-read") as reader, ThreadPoolExecutor(1, "replay-write") as writer:
            next_read = reader.submit(self._read_batch, position, batch, stop)
            try:
                while True:
                    notifications, latest = next_read.result()
                    if notifications:
                        position = _reached(notifications, batch, latest)
                        # A short batch reached the log's end as it was: look again from there.
                        next_read = reader.submit(self._read_batch, position, batch,
                                                  latest if len(notifications) == batch else stop)
                        evolved = self._evolved(notifications)
                        rows = [self.row(aggregate) for aggregate in evolved.values()]  # before the next batch evolves them
                        self._keep(evolved)  # the next batch carries on from them, committed or not yet
                    if writing is not None:
                        self.seen_up_to = self.committed = writing.result()
                        if progress:
                            progress(self.seen_up_to)
                        writing = None
                    if not notifications:
                        return replayed
                    writing = writer.submit(self._commit, rows, position)
                    replayed += len(notifications)
            except BaseException:
                self._recent.clear()  # it may hold states ahead of the last commit
                raise

    def _commit(self, rows: list[dict[str, Any]], reached: int) -> int:
        with self.engine.begin() as conn:
            self._write(conn, rows, reached)
        return reached

    def _write(self, conn: Connection, rows: list[dict[str, Any]], reached: int) -> None:
        conn.execute(self._upsert, rows)
        save_position(conn, self.name, reached)

    def _evolved(self, notifications: list[Notification]) -> dict[UUID, Aggregate]:
        """The aggregates these events change, each evolved by all of its events among them."""
        evolved: dict[UUID, Aggregate] = {}
        for notification in notifications:
            event = self.store.decode(notification)
            evolved[event.originator_id] = self._evolve(evolved.get(event.originator_id), event)
        return evolved

    def _keep(self, evolved: dict[UUID, Aggregate]) -> None:
        for aggregate_id, aggregate in evolved.items():
            self._recent[aggregate_id] = aggregate
            self._recent.move_to_end(aggregate_id)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def _read_batch(self, position: int, batch: int, latest: int | None) -> tuple[list[Notification], int]:
        """Our next `batch` events after `position`, up to `latest` (or the log's end as
        of now), and that end."""
        if latest is None:
            latest = self.store.recorder.max_notification_id() or 0
        if self.share is not None:
            return self.store.select_share(position, batch, stop=latest, topics=self._topics, share=self.share), latest
        notifications = self.store.recorder.select_notifications(
            position, batch, stop=latest, topics=self._topics, inclusive_of_start=False
        )
        return notifications, latest

    def shared_out(self, share: Share, store: EventStore) -> AggregateRows:
        """This read model as kept by one of several processes rebuilding it together:
        only the streams of `share` of the log, read from `store`, with a position of
        its own."""
        part = copy.copy(self)
        part.store, part.share = store, share
        part.name = share_position_name(self.name, share)
        part._recent, part._placed, part.seen_up_to, part.committed = OrderedDict(), False, 0, 0
        return part

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


def share_position_name(name: str, share: Share) -> str:
    return f"{name}/{share[0]}of{share[1]}"


def _reached(notifications: list[Notification], batch: int, latest: int) -> int:
    """How far a read of `batch` events up to `latest` has seen: the whole way, unless
    the batch came back full."""
    return latest if len(notifications) < batch else notifications[-1].id


def _kinds(base: type) -> set[type]:
    """Every event class deriving from `base` (the aggregate's own event types)."""
    kinds = set()
    for kind in base.__subclasses__():
        kinds |= {kind} | _kinds(kind)
    return kinds
