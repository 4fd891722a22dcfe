"""Saving together what many threads want saved at once (flat combining).

A commit costs a round trip and a flush to disk whatever it holds, so under load one
commit for many writers beats one each. Each caller hands in its request and takes
the lock; whoever gets it runs every request waiting by then in one go, and the
others, when their turn comes, find their outcome already set. Nothing waits on a
timer: a request alone is run at once.

An event loop's coroutines hand theirs in with `submit_async`: what they queue while a
batch is out goes to a worker thread together, one trip for the batch instead of a
thread held by each request.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError

from shared.store import EventStore


class Request(Protocol):
    outcome: Any  # None until the batch that held the request has run


R = TypeVar("R", bound=Request)


class Combiner(Generic[R]):
    def __init__(self, run: Callable[[list[R]], None]) -> None:
        """`run(batch)` sets every request's outcome (a result or an exception); if it
        raises, its error is the outcome of each request it left without one."""
        self._run = run
        self._running = threading.Lock()
        self._guard = threading.Lock()
        self._waiting: list[R] = []
        self._queued: list[tuple[R, asyncio.Future[None]]] = []  # handed in on the loop, not yet out
        self._courier: asyncio.Task[None] | None = None

    def submit(self, request: R) -> None:
        """Returns once `request.outcome` is set, by this thread or another."""
        with self._guard:
            self._waiting.append(request)
        with self._running:
            if request.outcome is None:
                self._run_waiting()

    async def submit_async(self, request: R) -> None:
        """Returns once `request.outcome` is set; for one event loop's coroutines."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queued.append((request, done))
        if self._courier is None or self._courier.done() or self._courier.get_loop() is not loop:
            self._courier = loop.create_task(self._carry())
        await done

    async def _carry(self) -> None:
        while self._queued:
            queued, self._queued = self._queued, []
            try:
                await asyncio.to_thread(self._run_with, [request for request, _ in queued])
            finally:
                for request, done in queued:
                    if done.done():  # its caller has left
                        continue
                    if request.outcome is None:  # this task was cancelled: the loop is stopping
                        done.cancel()
                    else:
                        done.set_result(None)

    def _run_with(self, batch: list[R]) -> None:
        with self._guard:
            self._waiting += batch
        with self._running:
            self._run_waiting()

    def _run_waiting(self) -> None:
        with self._guard:
            batch, self._waiting = self._waiting, []
        if not batch:  # a thread's run took it all
            return
        try:
            self._run(batch)
        except Exception as error:  # noqa: BLE001 - the run failed as a whole: each request left in it hears why
            for request in batch:
                if request.outcome is None:
                    request.outcome = error


@dataclass
class _Save:
    aggregates: Sequence[Aggregate]
    outcome: BaseException | bool | None = None


class GroupCommit:
    """`store.save`, shared by threads: aggregates saved at the same time go in one
    transaction. A conflict anywhere in it is every caller's conflict (the store has
    taken their pending events by then), so each reads afresh and tries again, as it
    would after a conflict of its own."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._saves: Combiner[_Save] = Combiner(self._save_all)

    def save(self, *aggregates: Aggregate) -> None:
        request = _Save(aggregates)
        self._saves.submit(request)
        if isinstance(request.outcome, BaseException):
            raise request.outcome

    def _save_all(self, batch: list[_Save]) -> None:
        for commit in _apart(batch):
            self._save_one(commit)

    def _save_one(self, commit: list[_Save]) -> None:
        try:
            self.store.save(*(aggregate for request in commit for aggregate in request.aggregates))
        except RecordConflictError as conflict:
            for request in commit:
                request.outcome = RecordConflictError(*conflict.args)
        except Exception as error:  # noqa: BLE001 - the store failed: every caller hears why
            for request in commit:
                request.outcome = error
        else:
            for request in commit:
                request.outcome = True


def _apart(batch: list[_Save]) -> list[list[_Save]]:
    """The batch as commits in which no stream appears twice: two callers writing one
    stream at once go in separate commits, so the second meets a real conflict and
    the first is saved, instead of both failing together again and again."""
    commits: list[tuple[list[_Save], set[Any]]] = []
    for request in batch:
        ids = {aggregate.id for aggregate in request.aggregates}
        home = next((c for c in commits if not c[1] & ids), None)
        if home is None:
            home = ([], set())
            commits.append(home)
        home[0].append(request)
        home[1].update(ids)
    return [requests for requests, _ in commits]
