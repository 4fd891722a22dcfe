"""Recording attempt outcomes, many per transaction.

Each delivery waits for its own outcome to be committed before its message is
acknowledged; deliveries finishing at about the same moment share one commit (the
Combiner's batches, shared/combining.py). That keeps the database's per-commit cost
(an fsync on SQLite, a round trip on PostgreSQL) and the thread hand-off from setting
the pace of delivery.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.combining import Combiner
from shared.projections.webhook_deliveries import DeliveryLog, Outcome


@dataclass
class _Pending:
    attempt: Outcome
    outcome: bool | BaseException | None = None  # True once committed


class OutcomeWriter:
    def __init__(self, deliveries: DeliveryLog) -> None:
        self._log = deliveries
        self._commits: Combiner[_Pending] = Combiner(self._commit)

    async def record(self, outcome: Outcome) -> None:
        """Returns once the outcome is committed; raises what the commit raised."""
        pending = _Pending(outcome)
        await self._commits.submit_async(pending)
        if isinstance(pending.outcome, BaseException):
            raise pending.outcome

    def _commit(self, batch: list[_Pending]) -> None:
        self._log.record([pending.attempt for pending in batch])
        for pending in batch:
            pending.outcome = True
