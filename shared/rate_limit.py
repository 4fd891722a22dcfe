"""Token buckets per API key: a key may spend `rate` requests a second on average and
`burst` at once. One process's view: each replica limits what reaches it.

The clock is injected (monotonic seconds), so the arithmetic is tested without waiting.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimits:
    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        """`rate` ≤ 0 switches limiting off (e.g. a benchmark's own deployment)."""
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: Hashable, rate: float | None = None) -> float:
        """Spend one request of `key`'s allowance: 0 when allowed, else the seconds until
        the next one is. `rate` overrides the default for this key (its burst scales with it)."""
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        burst = max(1.0, self.burst * rate / self.rate) if self.rate > 0 else max(1.0, rate)
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / rate
