"""Rebuild a read model from scratch: clear its rows, set its position back to the
start, and replay the whole notification log through the evolve-and-upsert code that
keeps it live (`AggregateRows.replay`), so a rebuilt projection cannot differ.

A long log on PostgreSQL is replayed by SHARES processes at once, each keeping the
streams of its share of the log (split by stream id, so each stream is evolved whole by
one of them) up to the position the rebuild started at; then this process carries on
from there. One process replaying is bound by its own CPU (decoding and evolving each
event), with the machine's other core mostly idle.

Readers see the model refill from empty. Stop the projector meanwhile: two writers of
one projection may collide on its position.
"""
from __future__ import annotations

import gc
import multiprocessing
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait

from sqlalchemy import select

from shared.projections.aggregate_rows import AggregateRows, share_position_name
from shared.projections.tracking import positions, save_position
from shared.read_db import reading
from shared.store import Share, reopened

Progress = Callable[[int], None]
REBUILD_BATCH = 2_000  # larger than the live batch: fewer aggregates re-read mid-stream
# A replay allocates a few dozen objects per event, nearly all dropped within its batch:
# the collector's default (a young collection every 700 allocations, a full one every
# 100 young ones) would scan the aggregates kept between batches over and over.
REPLAY_COLLECTION_THRESHOLDS = (50_000, 20, 100)
SHARES = 2  # processes replaying a long log together: one per core of the 2-core target machine
# Log positions; below that, forking and connecting again cost more than they save
# (measured: 40,000 positions 0.91 -> 0.79 s in 2 processes, 200,000 4.9 -> 3.6 s).
SHARED_FROM = 30_000
PROGRESS_SECONDS = 0.5  # how often shared replays' progress is read


class RebuildFailed(RuntimeError):
    """A process replaying a share of the log failed; its traceback is the message."""


def rebuild(projection: AggregateRows, *, batch: int = REBUILD_BATCH, progress: Progress | None = None,
            shares: int | None = None) -> int:
    """Returns how many events were replayed. `shares`: how many processes replay the
    log up to now (by default SHARES for a long log on PostgreSQL, else just this one)."""
    projection.store.refresh_statistics()
    with projection.engine.begin() as conn:
        conn.execute(projection.table.delete())
        conn.execute(positions.delete().where(positions.c.name.startswith(f"{projection.name}/")))
        save_position(conn, projection.name, 0)
    stop = projection.store.recorder.max_notification_id() or 0
    if shares is None:
        shares = SHARES if projection.engine.dialect.name == "postgresql" and stop >= SHARED_FROM else 1
    replayed = _replay_shared(projection, shares, stop, batch, progress) if shares > 1 else 0
    return replayed + catch_up_all(projection, batch=batch, progress=progress)


def catch_up_all(projection: AggregateRows, *, batch: int = REBUILD_BATCH, progress: Progress | None = None) -> int:
    """Apply every event the projection has not applied yet; returns how many were
    applied. `progress` hears the position reached after each batch."""
    with _fewer_collections():
        return projection.replay(batch, progress)


def _replay_shared(projection: AggregateRows, count: int, stop: int, batch: int, progress: Progress | None) -> int:
    """The log up to `stop` replayed by `count` forked processes, one share each; then
    the projection's position is `stop`. Returns how many events they applied."""
    shares = [(k, count) for k in range(count)]
    names = [share_position_name(projection.name, share) for share in shares]
    context = multiprocessing.get_context("fork")  # the child takes the projection as it is, unpickled
    answers: dict[Connection, int | str] = {}
    workers = []
    for share in shares:
        receiving, sending = context.Pipe(duplex=False)
        worker = context.Process(target=_replay_share, args=(projection, share, stop, batch, sending),
                                 name=f"rebuild {projection.name} {share[0]}of{count}", daemon=True)
        worker.start()
        sending.close()  # the child's end: once it exits, our end reads EOF
        workers.append((receiving, worker))
    while len(answers) < count:
        for ready in wait([pipe for pipe, _ in workers if pipe not in answers], timeout=PROGRESS_SECONDS):
            try:
                answers[ready] = ready.recv()  # type: ignore[index]
            except EOFError:
                answers[ready] = "it ended without an answer"  # type: ignore[index]
        if progress:
            with reading(projection.engine) as conn:
                progress(min(conn.scalars(select(positions.c.position).where(positions.c.name.in_(names))), default=0))
    for pipe, worker in workers:
        worker.join()
        pipe.close()
    failed = [f"{worker.name}: {answers[pipe]}" for pipe, worker in workers if not isinstance(answers[pipe], int)]
    if failed:
        raise RebuildFailed("\n".join(failed))
    with projection.engine.begin() as conn:
        conn.execute(positions.delete().where(positions.c.name.in_(names)))
        save_position(conn, projection.name, stop)
    return sum(answers[pipe] for pipe, _ in workers)  # type: ignore[misc]


def _replay_share(projection: AggregateRows, share: Share, stop: int, batch: int, answer: Connection) -> None:
    """In a forked child: the streams of `share` up to `stop` replayed on connections of
    its own. It answers with how many events it applied, or with what went wrong."""
    try:
        projection.engine.dispose(close=False)  # the parent's connections stay the parent's
        part = projection.shared_out(share, reopened(projection.store))
        try:
            with _fewer_collections():
                answer.send(part.replay(batch, stop=stop))
        finally:
            part.store.close()
            projection.engine.dispose()
    except BaseException:
        answer.send(traceback.format_exc())
        raise


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
