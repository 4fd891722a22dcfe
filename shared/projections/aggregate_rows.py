"""The shared machinery of a read model holding one row per aggregate: follow the
notification log, evolve each aggregate by its own events, upsert its row, and save
the position in the same transaction (exactly-once)."""
from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from sqlalchemy import Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from shared.projections.tracking import metadata, read_position, save_position
from shared.store import EventStore, surviving_start_race


class AggregateRows:
    name: ClassVar[str]  # position name in projection_positions
    table: ClassVar[Table]
    key: ClassVar[str]  # the table's primary key column
    events: ClassVar[type[Aggregate.Event]]  # the aggregate's event base class

    def __init__(self, store: EventStore, engine: Engine) -> None:
        self.store = store
        self.engine = engine
        surviving_start_race(lambda: metadata.create_all(engine))
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert

    def row(self, aggregate: Any) -> dict[str, Any]:
        raise NotImplementedError

    def catch_up(self, batch: int = 500) -> int:
        """Apply the next batch of events; returns how many notifications it read."""
        with self.engine.begin() as conn:
            position = read_position(conn, self.name)
            notifications = self.store.recorder.select_notifications(position, batch, inclusive_of_start=False)
            if not notifications:
                return 0
            evolved: dict[UUID, Aggregate] = {}
            for notification in notifications:
                event = self.store.decode(notification)
                if isinstance(event, self.events):
                    evolved[event.originator_id] = self._evolve(evolved.get(event.originator_id), event)
            for aggregate in evolved.values():
                row = self.row(aggregate)
                upsert = self._insert(self.table).values(row)
                conn.execute(upsert.on_conflict_do_update(index_elements=[self.key], set_=row))
            save_position(conn, self.name, notifications[-1].id)
            return len(notifications)

    def _evolve(self, aggregate: Aggregate | None, event: Aggregate.Event) -> Aggregate:
        # The batch may start in the middle of a stream: begin from the stored state before it.
        if aggregate is None and event.originator_version > 1:
            aggregate = self.store.repository.get(event.originator_id, version=event.originator_version - 1)
        return event.mutate(aggregate)
