"""Bounded load on the intake API over loopback: wrk for the peak rate when it is
installed, an async httpx client for the peak of 64 clients, and a hand-written
keep-alive client for the fixed rate."""
from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from uuid import uuid4

import httpx


def incident() -> dict:
    return {"severity": "P2", "customer": "C-汉中电力", "contract": "K-2026-017", "summary": "bench incident",
            "channel": "monitoring", "site": {"city": "汉中"}}


@dataclass
class Outcome:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # why: a status code or an exception's name
    latencies: list[float] = field(default_factory=list)
    # Each ticket opened, with the wall-clock instant its POST was sent (time.time(),
    # to compare with the instants JetStream and the store record).
    opened: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def why_failed(self) -> str:
        """"" when none failed, else " (502×2, ReadTimeout×1)"."""
        return f" ({', '.join(f'{why}×{n}' for why, n in self.failures.most_common())})" if self.failures else ""

    @property
    def ids(self) -> set[str]:
        return set(self.opened)

    def answered(self, sent: float, took: float, status: int, body: bytes) -> None:
        self.latencies.append(took)
        if status == 201:
            self.ok += 1
            self.opened[json.loads(body)["id"]] = sent
        else:
            self.failures[str(status)] += 1


async def _open(client: httpx.AsyncClient, outcome: Outcome) -> None:
    sent, began = time.time(), time.perf_counter()
    try:
        response = await client.post("/v1/tickets", json=incident(), headers={"Idempotency-Key": uuid4().hex})
    except httpx.HTTPError as error:
        outcome.failures[type(error).__name__] += 1
        return
    outcome.answered(sent, time.perf_counter() - began, response.status_code, response.content)


async def peak(api: str, headers: dict[str, str], clients: int, seconds: float, tickets: int | None = None) -> Outcome:
    """`clients` concurrent clients, each opening tickets back to back for `seconds`
    (or until `tickets` requests are sent between them)."""
    outcome = Outcome()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=api, headers=headers, limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds
        sent = itertools.count(1)

        async def worker() -> None:
            while time.perf_counter() < deadline and (tickets is None or next(sent) <= tickets):
                await _open(client, outcome)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        outcome.elapsed = time.perf_counter() - began
    return outcome


async def fixed_rate(api: str, headers: dict[str, str], rate: float, seconds: float) -> Outcome:
    """Open-loop: one request every 1/rate seconds, whatever the answers do."""
    outcome = Outcome()
    connections = KeptAlive(api, headers)
    began = time.perf_counter()
    pending = []
    for i in range(int(rate * seconds)):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(connections.open_ticket(outcome)))
    await asyncio.gather(*pending)
    outcome.elapsed = time.perf_counter() - began
    connections.close()
    return outcome


class KeptAlive:
    """POST /v1/tickets over keep-alive HTTP/1.1 connections, written and read by hand:
    at a fixed rate the client shares the product's 2 cores, and httpx spends about
    1.7-1.9 ms of CPU a request there (this, 0.6 ms). Answers must carry a
    Content-Length, as the intake's do; anything else counts as a failure."""

    def __init__(self, api: str, headers: dict[str, str]) -> None:
        address = urlsplit(api)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 80
        self.head = "".join(f"{name}: {value}\r\n" for name, value in (
            {"Host": address.netloc, "Content-Type": "application/json"} | headers).items())
        self.body = json.dumps(incident(), ensure_ascii=False).encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open_ticket(self, outcome: Outcome) -> None:
        sent, began = time.time(), time.perf_counter()
        try:
            async with asyncio.timeout(30):
                status, body = await self._post(idempotency_key=uuid4().hex)
        except (OSError, EOFError, ValueError, TimeoutError) as error:  # EOFError: IncompleteReadError
            outcome.failures[type(error).__name__] += 1
            return
        outcome.answered(sent, time.perf_counter() - began, status, body)

    async def _post(self, idempotency_key: str) -> tuple[int, bytes]:
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(f"POST /v1/tickets HTTP/1.1\r\n{self.head}Idempotency-Key: {idempotency_key}\r\n"
                         f"Content-Length: {len(self.body)}\r\n\r\n"
                         .encode() + self.body)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if "connection: close" in head:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(head[9:12]), body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass(frozen=True)
class WrkOutcome:
    requests: int
    failed: int  # answers of 400 or more, and socket errors
    seconds: float
    p50: float
    p99: float

    @property
    def rate(self) -> float:
        return (self.requests - self.failed) / self.seconds


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "{authorization}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, e.status + e.connect + e.read + e.write + e.timeout,
                         summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_peak(api: str, headers: dict[str, str], connections: int, seconds: float, work: Path) -> WrkOutcome:
    """Peak opening rate driven by wrk (C, two threads): a Python client would spend more
    CPU per request than the service it measures on a small machine. No Idempotency-Key:
    every request opens a new ticket."""
    script = work / "open.lua"
    script.write_text(_WRK_SCRIPT.format(body=json.dumps(incident(), ensure_ascii=False),
                                         authorization=headers["Authorization"]))
    run = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "30s", "-s", str(script), f"{api}/v1/tickets"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )
    fields = next(line for line in run.stdout.splitlines() if line.startswith("RESULT")).split()[1:]
    requests, failed, duration_us, p50_us, p99_us = map(int, fields)
    return WrkOutcome(requests, failed, duration_us / 1e6, p50_us / 1e6, p99_us / 1e6)
