"""Two dispatch instances (each with its own store connection) racing on real
PostgreSQL: the last spare unit is promised once, and an engineer with room for one
more ticket gets exactly one. Each instance holds its first save until both have
decided, so the race is certain, not hoped for."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from services.dispatch.wiring import Dispatch, dispatch
from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.domain.engineer import Engineer
from shared.domain.spare_unit import SpareUnit
from shared.settings import ROOT, Settings

pytestmark = pytest.mark.postgres

TUESDAY_0200 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone(timedelta(hours=8)))
ADMIN = {"actor": {"kind": "agent", "id": "admin"}, "correlation_id": "setup"}
OUTAGE = {"severity": "P1", "category": "fault", "channel": "monitoring", "customer": "C-汉中电力", "contract": "K-2026-017",
          "site": {"city": "汉中"}, "device": {"model": "NE40E-X8A"}, "summary": "汇聚路由器宕机", "description": "",
          "contact": {}, "source": {}}


@pytest.fixture
def instances(postgres_url: str) -> Iterator[tuple[Intake, Dispatch, Dispatch]]:
    clock = FakeClock(TUESDAY_0200)
    settings = Settings(database_url=postgres_url, contracts_file=ROOT / "deploy" / "contracts.toml")
    front = intake(settings, clock=clock)
    first, second = dispatch(settings, clock=clock), dispatch(settings, clock=clock)
    yield front, first, second
    for parts in (first, second, front):
        parts.close()


def open_ticket(front: Intake) -> str:
    return str(front.desk.open(details=OUTAGE, token=None, actor=ADMIN["actor"], correlation_id="race").ticket.id)


def hold_first_save(parts: Dispatch, barrier: threading.Barrier) -> None:
    """The instance waits for the other at its first save: both decide on the same state."""
    store = parts.tickets.store
    save, held = store.save, threading.Event()

    def wait_then_save(*aggregates: Any, **options: Any) -> Any:
        if not held.is_set():
            held.set()
            barrier.wait(timeout=20)
        return save(*aggregates, **options)

    store.save = wait_then_save  # type: ignore[method-assign]


def race(*calls: Callable[[], Any]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(call) for call in calls]]


def stream(parts: Dispatch, aggregate_id: Any) -> list[str]:
    return [type(e).__name__ for e in parts.tickets.store.events.get(aggregate_id)]


def test_two_tickets_racing_for_the_last_unit_one_gets_it(instances: tuple[Intake, Dispatch, Dispatch]) -> None:
    front, first, second = instances
    first.stock.put("SP-HZ-099", {"serial": "SN-LAST", "model": "NE40E-X8A", "warehouse": "WH-HZ"}, **ADMIN)
    tickets = [open_ticket(front) for _ in range(2)]
    for ticket in tickets:
        first.dispatcher.react(front.desk.get(ticket).id, 1, "ticket.opened", "race")
    leads = [first.tickets.get(t).lead_engineer for t in tickets]
    barrier = threading.Barrier(2)
    hold_first_save(first, barrier)
    hold_first_save(second, barrier)

    outcomes = race(*(lambda p=p, t=t, lead=lead: p.spares.request(t, engineer=lead, model=None, reason="主控板故障",
                                                                    actor={"kind": "engineer", "id": lead}, correlation_id="race")
                      for p, t, lead in zip((first, second), tickets, leads)))

    assert sorted(str(o.unit) for o in outcomes) == ["None", "SP-HZ-099"]
    loser = next(o for o in outcomes if o.unit is None)
    assert loser.detail == ("no NE40E-X8A available in any warehouse; escalated to L3 to find another way "
                            "(repair on site, a unit from the vendor)")
    unit = first.stock.get("SP-HZ-099")
    assert stream(first, unit.id).count("Reserved") == 1 and unit.ticket_id in tickets
    stories = [[type(e).__name__ for e in first.tickets.history(t)] for t in tickets]
    assert sorted(s.count("SpareUnitReserved") for s in stories) == [0, 1]
    lost = next(s for s in stories if "SpareUnitUnavailable" in s)
    assert lost[-2:] == ["SpareUnitUnavailable", "Escalated"]


def test_many_tickets_racing_for_two_units_never_promise_one_twice(instances: tuple[Intake, Dispatch, Dispatch]) -> None:
    front, first, second = instances
    for code in ("SP-HZ-097", "SP-AK-098"):
        first.stock.put(code, {"serial": code, "model": "NE40E-X8A", "warehouse": code.replace("SP", "WH")[:5]}, **ADMIN)
    tickets = [open_ticket(front) for _ in range(6)]
    for ticket in tickets:
        first.dispatcher.react(front.desk.get(ticket).id, 1, "ticket.opened", "race")

    def request(parts: Dispatch, ticket: str) -> Any:
        lead = parts.tickets.get(ticket).lead_engineer
        return parts.spares.request(ticket, engineer=lead, model=None, reason="r", actor=ADMIN["actor"], correlation_id="race")

    outcomes = race(*(lambda i=i, t=t: request((first, second)[i % 2], t) for i, t in enumerate(tickets)))

    assert sorted(o.unit for o in outcomes if o.unit) == ["SP-AK-098", "SP-HZ-097"]
    for code in ("SP-HZ-097", "SP-AK-098"):
        unit = first.stock.get(code)
        assert isinstance(unit, SpareUnit) and stream(first, unit.id).count("Reserved") == 1


def test_two_tickets_racing_for_an_engineer_with_room_for_one(instances: tuple[Intake, Dispatch, Dispatch]) -> None:
    front, first, second = instances
    # At 02:00 the best for any 汉中 network outage: same city, the skill, L2, at work around the clock.
    first.roster.put("E-000", {"name": "值班长", "branch": "汉中", "level": "L2", "skills": ["network"], "hours": "always",
                               "max_tickets": 1}, **ADMIN)
    tickets = [open_ticket(front) for _ in range(2)]
    barrier = threading.Barrier(2)
    hold_first_save(first, barrier)
    hold_first_save(second, barrier)

    race(*(lambda p=p, t=t: p.dispatcher.react(front.desk.get(t).id, 1, "ticket.opened", "race")
           for p, t in zip((first, second), tickets)))

    engineer = first.roster.get("E-000")
    assert isinstance(engineer, Engineer) and engineer.load == 1
    assert stream(first, engineer.id).count("TicketTaken") == 1
    leads = sorted(first.tickets.get(t).lead_engineer or "" for t in tickets)
    assert leads == ["E-000", "E-013"]  # the other ticket got the next best, never the full engineer
