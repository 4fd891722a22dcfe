"""Opening the store: processes starting together on a fresh database (make run,
make bench's loaders, several replicas) all get a working store. Reading many
streams at once gives what reading each one would."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

from sqlalchemy import inspect

from shared.clock import SystemClock
from shared.desk import TicketDesk
from shared.projections.engineer_list import EngineerListProjection
from shared.projections.webhook_deliveries import DeliveryLog
from shared.read_db import read_engine
from shared.store import open_store

DETAILS = {"severity": "P3", "category": "fault", "channel": "api", "customer": "C-1", "contract": None,
           "site": {}, "device": {}, "summary": "disk full", "description": "", "contact": {}, "source": {}}
ACTOR = {"kind": "client", "id": "test"}


def test_many_starting_at_once_on_a_fresh_database_all_open_it(database_url: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(lambda _: open_store(database_url), range(8)))
    try:
        assert all(store.recorder.max_notification_id() in (None, 0) for store in stores)
    finally:
        for store in stores:
            store.close()


def test_many_projections_starting_at_once_all_make_their_tables(database_url: str) -> None:
    store = open_store(database_url)
    engines = [read_engine(database_url) for _ in range(8)]

    def start(i: int) -> object:  # half a projector's, half a notifier's tables
        return EngineerListProjection(store, engines[i]) if i % 2 else DeliveryLog(engines[i])

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(start, range(8)))
        tables = set(inspect(engines[0]).get_table_names())
        assert {"projection_positions", "engineer_list", "webhook_deliveries", "webhook_attempts"} <= tables
    finally:
        store.close()
        for engine in engines:
            engine.dispose()


def test_many_streams_read_in_one_go_are_each_as_it_stands(database_url: str) -> None:
    store = open_store(database_url)
    try:
        desk = TicketDesk(store, SystemClock())
        tickets = [desk.open(details=DETAILS, token=None, actor=ACTOR, correlation_id="c").ticket for _ in range(3)]
        moved = desk.get(tickets[1].id)
        moved.acknowledge(plan="on it", at=SystemClock().now(), actor=ACTOR, correlation_id="c")
        store.save(moved)
        unknown = uuid4()

        read = store.get_many([t.id for t in tickets] + [unknown])

        assert set(read) == {t.id for t in tickets}  # the unknown id is simply absent
        for ticket in tickets:
            alone = store.repository.get(ticket.id)
            assert (read[ticket.id].version, read[ticket.id].status) == (alone.version, alone.status)
        assert read[tickets[1].id].version == tickets[1].version + 1
        assert store.last_versions([t.id for t in tickets] + [unknown]) == {
            tickets[0].id: tickets[0].version, tickets[1].id: tickets[1].version + 1,
            tickets[2].id: tickets[2].version, unknown: 0,
        }
        assert store.get_many([]) == {} and store.last_versions([]) == {}
    finally:
        store.close()


def test_a_cached_aggregate_is_read_as_it_stands_after_another_process_moved_it(database_url: str) -> None:
    """Dispatch keeps engineers and units in memory: a read after another process (here
    a second store) recorded an event gives the aggregate with that event, and a
    command that changed a copy it was handed, then failed, leaves the cache as it was."""
    cached, other = open_store(database_url, cached=10), open_store(database_url)
    try:
        desk = TicketDesk(other, SystemClock())
        ticket = desk.open(details=DETAILS, token=None, actor=ACTOR, correlation_id="c").ticket
        first = cached.repository.get(ticket.id)
        assert cached.repository.cache.get(ticket.id).version == first.version  # kept (KeyError if not)

        moved = desk.get(ticket.id)
        moved.acknowledge(plan="on it", at=SystemClock().now(), actor=ACTOR, correlation_id="c")
        other.save(moved)
        again = cached.repository.get(ticket.id)
        assert (again.version, again.status) == (first.version + 1, "acknowledged")

        again.comment(text="never saved", public=False, at=SystemClock().now(), actor=ACTOR, correlation_id="c")
        assert cached.repository.get(ticket.id).version == first.version + 1
    finally:
        cached.close()
        other.close()
