"""`make bench`: the product on PostgreSQL, driven over loopback, each figure printed
beside a raw baseline measured in the same run; the table is written to BENCHMARKS.md.

Bounded: every phase stops by itself (BENCH_SECONDS, default 30, sets the load phases).
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nats
import psycopg

from services.dispatch import bench as dispatch_bench
from services.relay.worker import Relay
from shared.bus import ensure_event_stream
from shared.clock import SystemClock
from shared.desk import TicketDesk
from shared.nats_server import free_port, start_nats_server
from shared.projections.rebuild import rebuild
from shared.projections.ticket_list import TicketListProjection
from shared.read_db import read_engine
from shared.store import open_store
from tests.bench import baselines, end_to_end, load, relay_probe, replay
from tests.bench.processes import peak_memory
from tests.bench.sla_lateness import SLA_TICKETS, sla_lateness
from tests.integration.test_webhook_delivery import measure, webhook_settings
from tests.product import ROOT, start_product
from tests.webhook_receiver import serving

POSTGRES = os.environ.get("TICKETING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "20000"))

Row = tuple[str, str, str, str]  # what, figure, baseline, ratio


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.0%}" if baseline else "—"


async def quiet_then_last_seq(nats_url: str, database_url: str) -> int:
    """Once the product has handled everything (see end_to_end.quiet), the EVENTS
    stream's last sequence."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await end_to_end.quiet(js, database_url)
        return (await js.stream_info("EVENTS")).state.last_seq
    finally:
        await client.close()


async def relay_lag(nats_url: str, after: int) -> list[tuple[str, float]]:
    """Per event stored after stream sequence `after`: its type, and JetStream's stored
    instant minus the event's own timestamp. That timestamp is taken before its
    transaction commits (for a probe's comment, just before: see relay_probe)."""
    client = await nats.connect(nats_url)
    js = client.jetstream()
    info = await js.stream_info("EVENTS")
    lags = []
    for seq in range(after + 1, info.state.last_seq + 1):
        message = await js.get_msg("EVENTS", seq)
        event = json.loads(message.data)
        recorded = datetime.fromisoformat(event["time"])
        lags.append((event["type"], (message.time - recorded).total_seconds() if message.time else float("nan")))
    await client.close()
    return lags


async def relay_throughput(database_url: str, work: Path) -> tuple[float, int]:
    """Relay a backlog of BACKLOG tickets (recorded with no relay running) to a fresh JetStream."""
    store = open_store(database_url)
    desk = TicketDesk(store, SystemClock())
    details = {"severity": "P3", "category": "fault", "channel": "api", "customer": "C-1", "contract": None,
               "site": {}, "device": {}, "summary": "backlog", "description": "", "contact": {}, "source": {}}
    for _ in range(BACKLOG):
        desk.open(details=details, token=None, actor={"kind": "client", "id": "bench"}, correlation_id="bench")
    port = free_port()
    server = start_nats_server(work / "relay-js", port)
    client = await nats.connect(f"nats://127.0.0.1:{port}")
    try:
        await ensure_event_stream(client.jetstream(), "EVENTS")
        relay = Relay(store, client, "EVENTS")
        began = time.perf_counter()
        published = 0
        while count := await relay.relay_available():
            published += count
        return published / (time.perf_counter() - began), published
    finally:
        await client.close()
        server.terminate()
        store.close()


DISPATCH_DECISIONS = {
    "ranking": "dispatch: ranking every engineer serving the site (pure rules)",
    "reaction": "dispatch: reaction to ticket.opened (catch up, rank, take capacity, record on two streams)",
    "reservation": "dispatch: spare-unit reservation (nearest of 10,000 units)",
}


def dispatch_row(kind: str, p50: float, p99: float, raw_save: float) -> Row:
    # A decision that records saves at least one aggregate: the raw save time is its floor.
    floor = 1 / raw_save
    recorded = kind != "ranking"
    return (DISPATCH_DECISIONS[kind], f"p50 {ms(p50)}, p99 {ms(p99)}",
            f"{ms(floor)} raw save" if recorded else "—", ratio(floor, p50) if recorded else "—")


async def webhook_figures(database_url: str, work: Path) -> list[Row]:
    """The notifier draining a backlog of 1,000 events × 3 subscriptions, then the latency
    of events recorded one at a time, beside raw POSTs to the same receiver."""
    port = free_port()
    server = start_nats_server(work / "jetstream-webhooks", port)
    try:
        with serving() as receiver:
            settings = webhook_settings(database_url, f"nats://127.0.0.1:{port}", work / "webhooks")
            figures = await measure(settings, receiver, work / "notifier.log", events=1000, subscriptions=3)
            raw = await baselines.http_post_rate(receiver.url("/baseline"), 3000, settings.webhook_concurrency * 3)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return [
        ("webhooks: deliveries/s draining a backlog (signed, logged, acked)",
         f"{figures.per_second:,.0f}/s ({figures.deliveries:,} deliveries)", f"{raw:,.0f}/s raw POSTs, same receiver",
         ratio(figures.per_second, raw)),
        ("webhooks: event recorded → delivered", f"p50 {ms(figures.latency_p50)}, p99 {ms(figures.latency_p99)}", "—", "—"),
    ]


def rebuild_rate(database_url: str) -> tuple[float, int, int]:
    """The ticket list built from an empty table: log positions covered per second (the
    projection skips other streams' events in the store), events applied, log length."""
    store = open_store(database_url)
    projection = TicketListProjection(store, read_engine(database_url))
    began = time.perf_counter()
    applied = rebuild(projection)  # what `ticketctl projections rebuild` runs
    elapsed = time.perf_counter() - began
    covered = store.recorder.max_notification_id() or 0
    projection.engine.dispose()
    store.close()
    return covered / elapsed, applied, covered


async def main() -> None:
    stamp = int(time.time())
    schemas = [f"bench_{stamp}_{name}" for name in ("raw", "product", "backlog")]
    raw_db, product_db, backlog_db = (f"{POSTGRES}?schema={s}" for s in schemas)
    rows: list[Row] = []
    driven = None
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        print("baseline: eventsourcing save rate (one-event aggregates, one thread) ...", flush=True)
        raw_save = baselines.store_save_rate(raw_db, seconds=5)
        product = start_product(work / "var", database_url=product_db, rate_limit="0")  # measure, not throttle
        try:
            print("baseline: JetStream publish rate ...", flush=True)
            js_sequential, js_windowed = await baselines.jetstream_publish_rates(product.nats_url, 20_000)
            if shutil.which("wrk"):
                print(f"intake: wrk, 64 connections for {SECONDS:.0f} s ...", flush=True)
                driven = await asyncio.to_thread(load.wrk_peak, product.api, product.admin, 64, SECONDS, work)
            print(f"intake: 64 httpx clients for {SECONDS:.0f} s ...", flush=True)
            peak = await load.peak(product.api, product.admin, clients=64, seconds=SECONDS)
            # Half the service's peak: wrk's figure when it ran (its client costs least).
            half_rate = (driven.rate if driven is not None else peak.rate) / 2
            # The half-peak phase starts once the peak phases' backlog is relayed and
            # handled, and the relay's lag is that of this phase's events only: a
            # backlog's lag and latency measure the backlog, not the relay or the intake.
            before_half = await quiet_then_last_seq(product.nats_url, product_db)
            print(f"intake: fixed rate {half_rate:.0f}/s for {SECONDS / 2:.0f} s ...", flush=True)
            half, _ = await asyncio.gather(
                load.fixed_rate(product.api, product.admin, rate=half_rate, seconds=SECONDS / 2),
                relay_probe.probe(product_db, sorted(peak.ids)[:50], seconds=SECONDS / 2))
            await asyncio.sleep(2)  # let the relay drain before sampling its lag
            lags = await relay_lag(product.nats_url, after=before_half)
            e2e_rows = await end_to_end.end_to_end(product, product_db, rate=half_rate, seconds=SECONDS)
            memory = peak_memory(product.process.pid)
        finally:
            product.stop()
        print(f"relay: a backlog of {BACKLOG} tickets ...", flush=True)
        relayed, relay_count = await relay_throughput(backlog_db, work)
        read_rate, read_count = baselines.notification_read_rate(backlog_db)
        rebuilt, rebuild_applied, rebuild_covered = rebuild_rate(backlog_db)
        print("dispatch: decisions with 1,000 engineers and 10,000 spare units ...", flush=True)
        decisions = await asyncio.to_thread(dispatch_bench.run, f"{POSTGRES}?schema=bench_{stamp}_dispatch")
        schemas.append(f"bench_{stamp}_dispatch")
        print("webhooks: a backlog of deliveries, then latency ...", flush=True)
        webhook_rows = await webhook_figures(f"{POSTGRES}?schema=bench_{stamp}_webhooks", work)
        schemas.append(f"bench_{stamp}_webhooks")
        replay_rows = await asyncio.to_thread(replay.replay, f"{POSTGRES}?schema=bench_{stamp}_replay")
        schemas.append(f"bench_{stamp}_replay")
        print(f"SLA clock: {SLA_TICKETS:,} open tickets, deadlines falling due over a few minutes ...", flush=True)
        sla_rows = await sla_lateness(work, POSTGRES, SLA_TICKETS)

    duplicates = (peak.ok + half.ok) - len(peak.ids | half.ids)
    all_lags = [lag for _, lag in lags]
    probed = [lag for kind, lag in lags if kind == relay_probe.TYPE]
    if driven is not None:
        rows.append(("intake peak, wrk 64 connections", f"{driven.rate:,.0f} tickets/s ({driven.requests:,} requests, "
                     f"{driven.failed} failed); p50 {ms(driven.p50)}, p99 {ms(driven.p99)}",
                     f"{raw_save:,.0f}/s raw save", ratio(driven.rate, raw_save)))
    rows += [
        ("raw store save rate (PostgreSQL)", f"{raw_save:,.0f} aggregates/s", "—", "—"),
        ("raw JetStream publish rate", f"{js_sequential:,.0f}/s each ack; {js_windowed:,.0f}/s windowed", "—", "—"),
        ("intake peak, 64 httpx clients (the client shares the 2 cores)", f"{peak.rate:,.0f} tickets/s ({peak.ok:,} ok, {peak.failed} failed{peak.why_failed()}, {duplicates} duplicates)",
         f"{raw_save:,.0f}/s raw save", ratio(peak.rate, raw_save)),
        ("intake latency at half peak", f"p50 {ms(load.percentile(half.latencies, .5))}, p99 {ms(load.percentile(half.latencies, .99))}"
         f" ({half.ok:,} ok, {half.failed} failed{half.why_failed()})", "—", "—"),
        (f"relay lag (committed → JetStream), the {len(probed):,} probe comments of the half-peak phase (target p99 ≤ 100 ms)",
         f"p50 {ms(load.percentile(probed, .5))}, p99 {ms(load.percentile(probed, .99))}", "—", "—"),
        (f"relay lag (recorded → JetStream), the {len(lags):,} events of the half-peak phase: each writer's time to commit too",
         f"p50 {ms(load.percentile(all_lags, .5))}, p99 {ms(load.percentile(all_lags, .99))}", "—", "—"),
        *e2e_rows,
        ("relay throughput (backlog)", f"{relayed:,.0f} events/s ({relay_count:,} events)",
         f"{js_windowed:,.0f}/s JetStream windowed", ratio(relayed, js_windowed)),
        ("relay vs raw save rate", f"{relayed:,.0f} events/s", f"{raw_save:,.0f}/s raw save", ratio(relayed, raw_save)),
        ("projection rebuild (ticket list), log positions/s", f"{rebuilt:,.0f}/s ({rebuild_covered:,} events in the log, "
         f"{rebuild_applied:,} of them tickets')",
         f"{read_rate:,.0f}/s raw notification read", ratio(rebuilt, read_rate)),
        *((f"peak memory: {name}", f"{kib / 1024:,.0f} MiB", "—", "—") for name, kib in sorted(memory.items())),
        *(dispatch_row(kind, p50, p99, raw_save) for kind, (p50, p99) in decisions.items()),
        *webhook_rows,
        *replay_rows,
        *sla_rows,
    ]
    report(rows)
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def report(rows: list[Row]) -> None:
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, PostgreSQL at {POSTGRES.rsplit('@', 1)[-1]}"
    header = ["what", "figure", "baseline (same run)", "ratio"]
    table = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"] + [f"| {' | '.join(row)} |" for row in rows]
    text = "\n".join([
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine}; "
        f"load phases {SECONDS:.0f} s. A re-run replaces this file.",
        "",
        *table,
        "",
    ])
    print("\n" + "\n".join(table))
    (ROOT / "BENCHMARKS.md").write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
