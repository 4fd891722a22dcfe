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
        self._fingerprint = -1

    async def refresh(self) -> None:
        """Catch the list up with the store; load it again only if a subscription changed
        (most events moving the position are other streams')."""
        async with self._lock:
            position = await asyncio.to_thread(self._projection.catch_up_fully)
            if position == self.position:
                return
            fingerprint = await asyncio.to_thread(self._projection.fingerprint)
            if fingerprint != self._fingerprint:
                self.subscriptions = await asyncio.to_thread(self._projection.everything)
                self._fingerprint = fingerprint
                self.generation += 1
            self.position = position

    async def reach(self, position: int) -> None:
        """Make sure the view includes everything recorded up to `position`."""
        if self.position < position:
            await self.refresh()

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
