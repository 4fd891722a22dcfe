"""The dispatch worker on a real nats-server, fed by the real relay, on SQLite and
PostgreSQL: a new ticket is assigned; a reaction that fails is delivered again and
recorded once; every event delivered again records nothing; two workers share the
durable consumer and assign each ticket once; the periodic scan raises an overdue
loan once."""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from services.dispatch.wiring import Dispatch, dispatch
from services.dispatch.worker import REACTED_TO, DispatchWorker
from services.relay.worker import Relay
from shared.bootstrap import Intake, intake
from shared.bus import connect, ensure_event_stream
from shared.clock import FakeClock
from shared.domain.ticket import Ticket
from shared.event_format import subject
from shared.settings import ROOT, Settings

pytestmark = pytest.mark.nats

STREAM = "EVENTS"
TUESDAY_0200 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone(timedelta(hours=8)))
ADMIN = {"kind": "agent", "id": "admin"}
OUTAGE = {"severity": "P1", "category": "fault", "channel": "monitoring", "customer": "C-汉中电力", "contract": "K-2026-017",
          "site": {"city": "汉中"}, "device": {"model": "S5700-28C-EI"}, "summary": "核心交换机宕机", "description": "",
          "contact": {}, "source": {}}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml")


@pytest.fixture
def front(settings: Settings) -> Iterator[Intake]:
    parts = intake(settings, clock=FakeClock(TUESDAY_0200))
    yield parts
    parts.close()


@pytest.fixture
def back(settings: Settings, front: Intake) -> Iterator[Dispatch]:
    parts = dispatch(settings, clock=front.desk.clock)
    yield parts
    parts.close()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url)
    await ensure_event_stream(client.jetstream(), STREAM)
    yield client
    await client.close()


@asynccontextmanager
async def worker(parts: Dispatch, nc: Client, durable: str = "dispatch", overdue_every: float = 60) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(
        DispatchWorker(parts.dispatcher, parts.spares, nc.jetstream(), stream=STREAM, durable=durable,
                       overdue_every=overdue_every).run(stop)
    )
    try:
        yield
    finally:
        stop.set()
        await running


async def until(condition: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll `condition` (a function, or a coroutine function) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.02)
    pytest.fail("condition not met in time")


async def consumer_idle(nc: Client, durable: str) -> bool:
    try:
        info = await nc.jetstream().consumer_info(STREAM, durable)
    except NotFoundError:
        return False  # the worker has not subscribed yet
    return info.num_pending == 0 and info.num_ack_pending == 0


def open_ticket(front: Intake) -> str:
    return str(front.desk.open(details=OUTAGE, token=None, actor=ADMIN, correlation_id="worker-test").ticket.id)


def assignments(front: Intake, ticket: str) -> list[str]:
    return [e.engineer for e in front.desk.history(ticket) if type(e).__name__ == "EngineerAssigned"]


def overdue_raised(front: Intake, ticket: str) -> list[str]:
    return [e.unit for e in front.desk.history(ticket) if type(e).__name__ == "SpareReturnOverdue"]


async def test_a_new_ticket_is_assigned_and_acknowledged(front: Intake, back: Dispatch, nc: Client) -> None:
    ticket = open_ticket(front)
    relay = Relay(front.desk.store, nc, STREAM)
    async with worker(back, nc):
        await relay.relay_available()
        assert await until(lambda: assignments(front, ticket)) == ["E-013"]
        await relay.relay_available()
        await until(lambda: consumer_idle(nc, "dispatch"))
    assigned = front.desk.history(ticket)[-1]
    assert assigned.correlation_id == "worker-test"  # the reaction carries the story's correlation id


async def test_the_consumer_takes_only_the_events_dispatch_reacts_to(front: Intake, back: Dispatch, nc: Client) -> None:
    """A ticket's SLA commitment (and any other event dispatch does nothing with) is never
    delivered to it; a consumer an earlier version made for every ticket event is
    narrowed at start and keeps its place."""
    js = nc.jetstream()
    await js.add_consumer(STREAM, ConsumerConfig(name="dispatch", durable_name="dispatch", filter_subject="events.ticket.>",
                                                 ack_policy=AckPolicy.EXPLICIT))
    ticket = open_ticket(front)
    await Relay(front.desk.store, nc, STREAM).relay_available()  # ticket.opened, then ticket.sla_committed
    async with worker(back, nc):
        assert await until(lambda: assignments(front, ticket)) == ["E-013"]
        await until(lambda: consumer_idle(nc, "dispatch"))
    info = await js.consumer_info(STREAM, "dispatch")
    assert info.delivered.consumer_seq == 1  # the opening only
    ticket_subjects = {subject(object.__new__(kind)) for kind in _kinds(Ticket.Event)}
    assert set(info.config.filter_subjects or []) == set(REACTED_TO) and set(REACTED_TO) <= ticket_subjects
    assert "events.ticket.opened" in REACTED_TO and "events.ticket.sla_committed" not in REACTED_TO


def _kinds(base: type) -> set[type]:
    return {kind for sub in base.__subclasses__() for kind in {sub} | _kinds(sub)}


async def test_a_failed_reaction_is_delivered_again_and_recorded_once(front: Intake, back: Dispatch, nc: Client,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    react_many, failures = back.dispatcher.react_many, []

    def flaky(reactions: Any) -> Any:
        if not failures:
            failures.extend(reactions)
            raise ConnectionError("database went away")
        return react_many(reactions)

    monkeypatch.setattr(back.dispatcher, "react_many", flaky)
    ticket = open_ticket(front)
    async with worker(back, nc):
        await Relay(front.desk.store, nc, STREAM).relay_available()
        assert await until(lambda: assignments(front, ticket)) == ["E-013"]
    assert len(failures) == 1 and failures[0].event_type == "ticket.opened"


async def test_everything_delivered_again_records_nothing(front: Intake, back: Dispatch, nc: Client) -> None:
    tickets = [open_ticket(front) for _ in range(3)]
    relay = Relay(front.desk.store, nc, STREAM)
    async with worker(back, nc):
        await relay.relay_available()
        await until(lambda: all(assignments(front, t) for t in tickets))
        await relay.relay_available()  # the assignments themselves, which dispatch ignores
    recorded = front.desk.store.recorder.max_notification_id()
    async with worker(back, nc, durable="dispatch-replay"):  # a new consumer: the whole stream again
        await until(lambda: consumer_idle(nc, "dispatch-replay"))
    assert front.desk.store.recorder.max_notification_id() == recorded
    assert [assignments(front, t) for t in tickets] == [["E-013"], ["E-013"], ["E-013"]]


async def test_two_workers_share_the_durable_consumer(front: Intake, back: Dispatch, settings: Settings, nc: Client) -> None:
    other = dispatch(settings, clock=front.desk.clock)
    try:
        tickets = [open_ticket(front) for _ in range(8)]
        async with worker(back, nc), worker(other, nc):
            await Relay(front.desk.store, nc, STREAM).relay_available()
            await until(lambda: all(assignments(front, t) for t in tickets), timeout=20)
        assert_staffed_once(front, back, tickets)
    finally:
        other.close()


async def test_a_burst_is_staffed_several_tickets_at_a_time(front: Intake, back: Dispatch, nc: Client) -> None:
    tickets = [open_ticket(front) for _ in range(8)]
    async with worker(back, nc):
        await Relay(front.desk.store, nc, STREAM).relay_available()
        await until(lambda: all(assignments(front, t) for t in tickets), timeout=20)
    assert_staffed_once(front, back, tickets)


def assert_staffed_once(front: Intake, back: Dispatch, tickets: list[str]) -> None:
    """Each ticket got one lead, and nobody carries more than they may: the night's
    engineers in 汉中 share the tickets."""
    assert all(len(assignments(front, t)) == 1 for t in tickets)
    loads = {code: back.roster.get(code).load for code in ("E-013", "E-019", "E-020", "E-005", "E-002")}
    assert sum(loads.values()) == len(tickets)
    assert all(load <= back.roster.get(c).profile.max_tickets for c, load in loads.items())


async def test_the_periodic_scan_raises_an_overdue_loan_once(front: Intake, back: Dispatch, nc: Client,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    scan, scans = back.spares.flag_overdue, []

    def counted() -> int:
        raised = scan()
        scans.append(raised)
        return raised

    monkeypatch.setattr(back.spares, "flag_overdue", counted)
    clock, ticket = front.desk.clock, open_ticket(front)
    assert isinstance(clock, FakeClock)
    return_by = TUESDAY_0200 + timedelta(hours=4)
    # A scan on every pass of the loop (which waits at most FETCH_WAIT_SECONDS for messages).
    async with worker(back, nc, overdue_every=0.001):
        await Relay(front.desk.store, nc, STREAM).relay_available()
        lead = (await until(lambda: assignments(front, ticket)))[0]
        who = {"actor": ADMIN, "correlation_id": "advance-replacement"}
        unit = back.spares.request(ticket, engineer=lead, model=None, reason="advance replacement", **who).unit
        assert unit is not None
        back.spares.ship(unit, reference="", **who)
        back.spares.install(unit, return_by=return_by, **who)
        installed = len(scans)
        await until(lambda: len(scans) >= installed + 2)  # scans while the loan is still due back later
        assert not overdue_raised(front, ticket)
        clock.set(return_by + timedelta(seconds=1))
        await until(lambda: overdue_raised(front, ticket))
        seen = len(scans)
        await until(lambda: len(scans) >= seen + 2)  # later scans find it raised already
    assert overdue_raised(front, ticket) == [unit]
    assert sum(scans) == 1 and back.stock.get(unit).overdue
