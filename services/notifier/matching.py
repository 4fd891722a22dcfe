"""Which subscriptions an event goes to: type and age first (from the subscription
list), then filters, which need the facts of the event's stream (a ticket's customer,
severity and region as they stood at that event), read from the store only when some
candidate filters at all."""
from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import lru_cache
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from services.notifier.queue import Incoming
from shared.domain.webhook import Facts, Filters
from shared.projections.webhook_subscriptions import Subscription
from shared.store import EventStore

NO_FILTERS = Filters()
FACTS_CACHED = 4096  # fan-out to many subscriptions reads each (stream, version) once


class Matcher:
    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._facts = lru_cache(maxsize=FACTS_CACHED)(self._load_facts)

    async def select(self, event: Incoming, candidates: Iterable[Subscription]) -> list[Subscription]:
        """The candidates whose filters admit the event."""
        candidates = list(candidates)
        if all(s.spec.filters == NO_FILTERS for s in candidates):
            return candidates
        facts = await asyncio.to_thread(self._facts, event.subject, event.version)
        return [s for s in candidates if s.spec.filters.admits(facts)]

    def _load_facts(self, stream: str, version: int) -> Facts:
        try:
            aggregate = self._store.repository.get(UUID(stream), version=version)
        except (AggregateNotFoundError, ValueError):  # not a stream of ours: nothing to filter on
            return Facts()
        return Facts.of(aggregate)
