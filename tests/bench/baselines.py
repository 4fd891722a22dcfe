"""Raw baselines measured in the same run as the product: what the event store and
JetStream do on their own, so the product's figures can be read as ratios."""
from __future__ import annotations

import asyncio
import time
from uuid import uuid4

import httpx
import nats
from eventsourcing.domain import Aggregate

from shared.store import open_store


class Probe(Aggregate):
    """A one-event aggregate: the cheapest thing the store can save."""

    class Created(Aggregate.Created):
        payload: str

    def __init__(self, payload: str) -> None:
        self.payload = payload


def store_save_rate(database_url: str, seconds: float) -> float:
    store = open_store(database_url)
    saved, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        store.save(Probe._create(Probe.Created, id=uuid4(), payload="x" * 200))
        saved += 1
    rate = saved / (time.perf_counter() - began)
    store.close()
    return rate


def notification_read_rate(database_url: str) -> tuple[float, int]:
    """Notifications read per second from the whole log (no decoding)."""
    store = open_store(database_url)
    read, position, began = 0, 0, time.perf_counter()
    while batch := store.recorder.select_notifications(position, 1000, inclusive_of_start=False):
        read += len(batch)
        position = batch[-1].id
    elapsed = time.perf_counter() - began
    store.close()
    return read / elapsed, read


async def jetstream_publish_rates(nats_url: str, count: int) -> tuple[float, float]:
    """JetStream publishes per second awaiting each ack, and with acks awaited in windows of 256."""
    client = await nats.connect(nats_url)
    js = client.jetstream()
    stream = f"BASELINE_{uuid4().hex[:8]}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    body = b"x" * 600
    began = time.perf_counter()
    for i in range(count):
        await js.publish(f"{stream}.one", body, headers={"Nats-Msg-Id": f"a{i}"})
    sequential = count / (time.perf_counter() - began)
    began = time.perf_counter()
    for start in range(0, count, 256):
        await asyncio.gather(*(js.publish(f"{stream}.many", body, headers={"Nats-Msg-Id": f"b{i}"})
                               for i in range(start, min(count, start + 256))))
    windowed = count / (time.perf_counter() - began)
    await js.delete_stream(stream)
    await client.close()
    return sequential, windowed


async def http_post_rate(url: str, count: int, concurrency: int) -> float:
    """POSTs a second to a receiver on loopback, `concurrency` at a time: what delivering
    webhooks could reach if signing, queueing and logging cost nothing."""
    body = b'{"type": "baseline"}' * 20
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:
        remaining = iter(range(count))

        async def sender() -> None:
            for _ in remaining:
                await client.post(url, content=body, headers={"content-type": "application/json"})

        began = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return count / (time.perf_counter() - began)
