"""Dispatch decision time with a large roster and stock:
`python -m services.dispatch.bench [database_url]` (default: a fresh schema on the
test PostgreSQL). Prints p50/p99 of

- the ranking alone (pure rules over every engineer serving the site),
- a whole reaction to `ticket.opened` (catch up the read models, rank, take the
  engineer's capacity, record on both streams),
- a spare-unit reservation (nearest of thousands of units of one model),

with 1,000 engineers and 10,000 spare units (BENCH_ENGINEERS, BENCH_UNITS), on
BENCH_TICKETS tickets. `run` returns the figures for `make bench`.
"""
from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import psycopg

from services.dispatch.wiring import dispatch
from shared.bootstrap import intake
from shared.clock import FakeClock
from shared.dispatch_store import Workspace, save_retrying
from shared.dispatching import Need, branches_serving, rank
from shared.domain.engineer import LEVELS, WEEKDAYS, Engineer, Profile
from shared.domain.spare_unit import Record, SpareUnit
from shared.settings import ROOT, Settings

TUESDAY_0200 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone(timedelta(hours=8)))
SETUP = {"actor": {"kind": "service", "id": "bench"}, "correlation_id": "bench"}
MODELS = ("S5700-28C-EI", "S6730-H24X6C", "AR6280", "USG6550", "RH2288H V3")
BATCH = 500


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def run(database_url: str, engineers: int = 1000, units: int = 10000, tickets: int = 200) -> dict[str, tuple[float, float]]:
    """Seconds (p50, p99) per decision kind."""
    clock = FakeClock(TUESDAY_0200)
    settings = Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml")
    front, back = intake(settings, clock=clock), dispatch(settings, clock=clock)
    try:
        _populate(back.tickets.store, back.rules, engineers, units, clock.now())
        back.reads.refresh()
        figures = {"ranking": [], "reaction": [], "reservation": []}
        for _ in range(tickets):
            details = _incident(back.rules)
            opened = front.desk.open(details=details, token=None, actor=SETUP["actor"], correlation_id="bench").ticket
            need = Need(city=details["site"]["city"], region=None, skill="network", min_level="L2", at=clock.now())
            candidates = back.reads.engineers.candidates(branches_serving(back.rules, need.city, back.rules.cities[need.city].region))
            figures["ranking"].append(timed(lambda: rank(back.rules, candidates, need)))
            figures["reaction"].append(timed(lambda: back.dispatcher.react(opened.id, 1, "ticket.opened", "bench")))
            model = details["device"]["model"]
            figures["reservation"].append(timed(lambda: save_retrying(back.tickets.store, lambda: back.spares.reserve_into(
                back.tickets.get(opened.id), model, "bench", cause=0, within=Workspace(), **SETUP))))
        return {kind: percentiles(samples) for kind, samples in figures.items()}
    finally:
        back.close()
        front.close()


def _populate(store: Any, rules: Any, engineers: int, units: int, at: datetime) -> None:
    """A synthetic roster and stock, saved in batches (registering one by one would
    measure the store, not dispatch)."""
    chance = random.Random(7)
    branches, skills, warehouses = sorted(rules.cities), sorted(rules.skills), sorted(rules.warehouses)
    people = [
        Engineer.register(f"B-{n:05d}", Profile.of({
            "name": f"工程师{n}", "branch": chance.choice(branches), "level": chance.choice(LEVELS),
            "skills": chance.sample(skills, 2), "hours": "cn-business", "on_call": chance.sample(WEEKDAYS, 2),
            "max_tickets": chance.randint(2, 6),
        }), at=at, **SETUP)
        for n in range(engineers)
    ]
    stock = [SpareUnit.register(f"B-SP-{n:06d}", Record(f"SN{n:08d}", chance.choice(MODELS), chance.choice(warehouses)), at=at, **SETUP)
             for n in range(units)]
    everything = people + stock
    for start in range(0, len(everything), BATCH):
        store.save(*everything[start:start + BATCH])


def _incident(rules: Any) -> dict[str, Any]:
    city = random.choice(sorted(rules.cities))
    return {"severity": "P1", "category": "fault", "channel": "monitoring", "customer": "C-汉中电力", "contract": "K-2026-017",
            "site": {"city": city}, "device": {"model": random.choice(MODELS)}, "summary": "bench", "description": "",
            "contact": {}, "source": {}}


def main() -> None:
    engineers, units = int(os.environ.get("BENCH_ENGINEERS", "1000")), int(os.environ.get("BENCH_UNITS", "10000"))
    tickets = int(os.environ.get("BENCH_TICKETS", "200"))
    if len(sys.argv) > 1:
        database_url = sys.argv[1]
        figures = run(database_url, engineers, units, tickets)
    else:
        base = os.environ.get("TICKETING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        schema = f"bench_dispatch_{uuid4().hex[:8]}"
        database_url = f"{base}?schema={schema}"
        try:
            figures = run(database_url, engineers, units, tickets)
        finally:
            with psycopg.connect(base, autocommit=True) as admin:
                admin.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
    print(f"dispatch decisions with {engineers:,} engineers and {units:,} spare units ({database_url.split('?')[0]})")
    for kind, (p50, p99) in figures.items():
        print(f"  {kind:<12} p50 {p50 * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
