"""Recording attempt outcomes, many per transaction.

Each delivery waits for its own outcome to be committed before its message is
acknowledged; deliveries finishing at about the same moment share one commit.
That keeps the database's per-commit cost (an fsync on SQLite, a round trip on
PostgreSQL) and the thread hand-off from setting the pace of delivery.
"""
from __future__ import annotations

import asyncio

from shared.projections.webhook_deliveries import DeliveryLog, Outcome


class OutcomeWriter:
    def __init__(self, deliveries: DeliveryLog) -> None:
        self._log = deliveries
        self._waiting: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def record(self, outcome: Outcome) -> None:
        """Returns once the outcome is committed; raises what the commit raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((outcome, done))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        # Outcomes arriving while a batch commits form the next batch.
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(self._log.record, [outcome for outcome, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to every waiting delivery, which decides
                for _, done in batch:
                    if not done.done():  # a delivery cancelled at shutdown no longer waits
                        done.set_exception(error)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
