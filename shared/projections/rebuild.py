"""Rebuild a read model from scratch: clear its rows, set its position back to the
start, and replay the whole notification log through its own `catch_up`, so a rebuilt
projection is made by exactly the code that keeps it live.

Readers see the model refill from empty. Stop the projector meanwhile: two writers of
one projection may collide on its position.
"""
from __future__ import annotations

from collections.abc import Callable

from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import read_position, save_position

Progress = Callable[[int], None]
REBUILD_BATCH = 2_000  # larger than the live batch: fewer aggregates re-read mid-stream


def rebuild(projection: AggregateRows, *, batch: int = REBUILD_BATCH, progress: Progress | None = None) -> int:
    """Returns how many notifications were replayed."""
    with projection.engine.begin() as conn:
        conn.execute(projection.table.delete())
        save_position(conn, projection.name, 0)
    return catch_up_all(projection, batch=batch, progress=progress)


def catch_up_all(projection: AggregateRows, *, batch: int = REBUILD_BATCH, progress: Progress | None = None) -> int:
    """Apply every event the projection has not applied yet; returns how many
    notifications were read. `progress` hears the position reached after each batch."""
    replayed = 0
    while read := projection.catch_up(batch):
        replayed += read
        if progress:
            with projection.engine.connect() as conn:
                progress(read_position(conn, projection.name))
    return replayed
