"""When to try a delivery again, and when to give up: pure, so it is tested alone.

Only a 2xx answer delivers. 410 Gone means the receiver is gone for good: the
subscription is disabled at once. Anything else (another status, a timeout, a refused
connection) waits for the next step of the schedule, with jitter so receivers coming
back from an outage are not hit by every retry at once, and never sooner than the
receiver's `Retry-After`. When the schedule is exhausted the delivery has failed and
the subscription is disabled.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from shared.projections.webhook_deliveries import DeliveryStatus

GONE = 410


@dataclass(frozen=True)
class Verdict:
    status: DeliveryStatus
    retry_in: float | None = None  # seconds, while pending
    disable: str | None = None  # why the subscription must stop, if it must


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...]  # the delay before retry 1, 2, ...
    jitter: float = 0.2  # a fraction either way

    def judge(self, attempt: int, status_code: int | None, retry_after: float | None, rng: random.Random) -> Verdict:
        """The verdict on attempt number `attempt` (from 1) that got `status_code` (None: no answer)."""
        if status_code is not None and 200 <= status_code < 300:
            return Verdict(DeliveryStatus.DELIVERED)
        if status_code == GONE:
            return Verdict(DeliveryStatus.FAILED, disable="gone")
        if attempt > len(self.schedule):
            return Verdict(DeliveryStatus.FAILED, disable="retries_exhausted")
        delay = self.schedule[attempt - 1] * (1 + rng.uniform(-self.jitter, self.jitter))
        if retry_after is not None:
            # Honoured, but within the schedule's longest step: a receiver cannot park a
            # delivery for longer than we would have waited anyway.
            delay = max(delay, min(retry_after, max(self.schedule)))
        return Verdict(DeliveryStatus.PENDING, retry_in=delay)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A `Retry-After` header (delta-seconds or an HTTP date) as seconds from `now`."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
