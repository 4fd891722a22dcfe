"""Rebuild a read model from scratch: clear its rows, set its position back to the
start, and replay the whole notification log through its own `catch_up`, so a rebuilt
projection is made by exactly the code that keeps it live.

Readers see the model refill from empty. Stop the projector meanwhile: two writers of
one projection may collide on its position.
"""
from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import read_position, save_position

Progress = Callable[[int], None]
REBUILD_BATCH = 2_000  # larger than the live batch: fewer aggregates re-read mid-stream
# A replay allocates a few dozen objects per event, nearly all dropped within its batch:
# the collector's default (a young collection every 700 allocations, a full one every
# 100 young ones) would scan the aggregates kept between batches over and over.
REPLAY_COLLECTION_THRESHOLDS = (50_000, 20, 100)


def rebuild(projection: AggregateRows, *, batch: int = REBUILD_BATCH, progress: Progress | None = None) -> int:
    """Returns how many notifications were replayed."""
    projection.store.refresh_statistics()
    with projection.engine.begin() as conn:
        conn.execute(projection.table.delete())
        save_position(conn, projection.name, 0)
    return catch_up_all(projection, batch=batch, progress=progress)


def catch_up_all(projection: AggregateRows, *, batch: int = REBUILD_BATCH, progress: Progress | None = None) -> int:
    """Apply every event the projection has not applied yet; returns how many
    notifications were read. `progress` hears the position reached after each batch."""
    replayed = 0
    with _fewer_collections(), ThreadPoolExecutor(1, thread_name_prefix="replay-read") as reader:
        while read := projection.catch_up(batch, reader=reader):
            replayed += read
            if progress:
                with projection.engine.connect() as conn:
                    progress(read_position(conn, projection.name))
    return replayed


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """What the process holds before the replay is set aside from the collector, and
    collections come less often, for the replay only."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*REPLAY_COLLECTION_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
