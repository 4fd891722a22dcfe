"""The notifier's view of the subscriptions: the subscription list, caught up with the
store, held in memory and reloaded whenever it moved.

An event is matched only once the view has caught up with the event's own position
in the store, so a subscription made before an event is never missed because the
notifier had not heard of it yet.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

from shared.domain.webhook import Status
from shared.projections.webhook_subscriptions import Subscription, WebhookSubscriptionsProjection


class Directory:
    def __init__(self, projection: WebhookSubscriptionsProjection) -> None:
        self._projection = projection
        self._lock = asyncio.Lock()
        self.position = -1  # the store position the view reflects; -1: not loaded yet
        self.subscriptions: dict[UUID, Subscription] = {}
        # Counts the view's changes, whoever refreshed it (the fan-out does too), so the
        # lanes can tell they are behind.
        self.generation = 0
        self._loaded_at = -1  # the list's saved position when the view was loaded

    async def refresh(self, latest: int | None = None) -> None:
        """Catch the list up with the store (up to position `latest`, when the caller
        knows the log reaches there), in one trip to a thread; load it again only if a
        subscription changed. Most events moving the log are other streams', which move
        neither the list's rows nor its saved position."""
        async with self._lock:
            if latest is not None and self.position >= latest:
                return  # a refresh it waited for got there
            position, loaded_at, loaded = await asyncio.to_thread(self._look, latest, self._loaded_at)
            if loaded is not None:
                self.subscriptions, self._loaded_at = loaded, loaded_at
                self.generation += 1
            self.position = position

    def _look(self, latest: int | None, loaded_at: int) -> tuple[int, int, dict[UUID, Subscription] | None]:
        """(The position the list has seen, its saved position, its subscriptions if that
        moved since `loaded_at`.)"""
        position = self._projection.catch_up_fully(latest)
        committed = self._projection.committed
        return position, committed, self._projection.everything() if committed != loaded_at else None

    async def reach(self, position: int) -> None:
        """Make sure the view includes everything recorded up to `position`."""
        if self.position < position:
            await self.refresh(position)

    def get(self, subscription_id: UUID) -> Subscription | None:
        return self.subscriptions.get(subscription_id)

    def fanning_out(self, event_type: str, event_time: datetime) -> list[Subscription]:
        """The subscriptions that take a new event of this type (filters aside): active or
        paused (a paused one queues), made before the event, wanting its type."""
        return [
            s for s in self.subscriptions.values()
            if s.status in (Status.ACTIVE, Status.PAUSED) and wants(s, event_type, event_time)
        ]


def wants(subscription: Subscription, event_type: str, event_time: datetime) -> bool:
    """Whether the subscription wants an event of this type and time (filters aside):
    nothing from before it existed."""
    return event_time >= subscription.created_at and subscription.spec.wants_type(event_type)
