"""The SLA clock service: warnings, breaches and escalations recorded on the ticket at
their due instants. The alarm core is driven by the injected clock (a 48-hour target
in milliseconds, nothing slept); one test runs the worker against a real nats-server
with a policy whose targets are seconds, and measures how late each alert lands."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from services.relay.worker import Relay
from services.sla_clock.alarms import Settled, SlaAlarms
from services.sla_clock.timers import Timers, ensure_timer_stream
from services.sla_clock.worker import EVENTS_CONSUMER, FETCH_SECONDS, TICKET_EVENTS, SlaClockWorker
from shared.bootstrap import Intake, intake
from shared.bus import connect, ensure_event_stream
from shared.clock import FakeClock, SystemClock
from shared.domain.errors import TicketNotFound
from shared.domain.ticket import Severity, Ticket
from shared.event_format import history_entry
from shared.settings import ROOT, Settings
from shared.store import open_store

CONTRACTS = ROOT / "deploy" / "contracts.toml"
POLICIES = ROOT / "tests" / "policies"
CLIENT = {"kind": "client", "id": "zabbix"}
ENGINEER = {"kind": "engineer", "id": "E-HZ-01"}
SLA_CLOCK = {"kind": "service", "id": "sla_clock"}
T = TypeVar("T")
ALERTS = ("sla.warning", "sla.breached", "ticket.escalated")


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url, contracts_file=CONTRACTS), clock=clock)
    yield parts
    parts.close()


@pytest.fixture
def alarms(service: Intake, clock: FakeClock) -> SlaAlarms:
    return SlaAlarms(service.desk.store, service.policy, clock)


def open_ticket(service: Intake, **changes: Any) -> Ticket:
    """A P1 fault on K-2026-017 (premium, 7×24): response 30 min, on site 2 h,
    resolution 48 h; warnings at 75 %."""
    details = {
        "severity": "P1", "category": "fault", "channel": "monitoring", "customer": "C-汉中电力",
        "contract": "K-2026-017", "site": {"city": "汉中"}, "device": {"model": "S5700"},
        "summary": "核心交换机宕机", "description": "", "contact": {}, "source": {},
    } | changes
    return service.desk.open(details=details, token=None, actor=CLIENT, correlation_id="c-open").ticket


def act(service: Intake, ticket: Ticket, command: str, **arguments: Any) -> None:
    service.desk.act(ticket.id, command, expected_version=None, actor=ENGINEER, correlation_id="c-act", **arguments)


def alerts(service: Intake, ticket: Ticket) -> list[dict[str, Any]]:
    """The ticket's SLA alerts and escalations as its history shows them."""
    return [e for e in map(history_entry, service.desk.history(ticket.id)) if e["type"] in ALERTS]


def escalations(service: Intake, ticket: Ticket) -> list[dict[str, Any]]:
    return [e for e in alerts(service, ticket) if e["type"] == "ticket.escalated"]


def summary(entry: dict[str, Any]) -> tuple[str, str]:
    return entry["type"], entry["data"].get("target") or entry["data"]["level"]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- the alarm core, on the injected clock ------------------------------------------


def test_warnings_and_breaches_fire_at_their_instants_and_breaches_walk_the_ladder(
    service: Intake, alarms: SlaAlarms, clock: FakeClock
) -> None:
    opened = clock.now()
    ticket = open_ticket(service)
    fired = []
    while (at := alarms.next_instant(ticket.id)) is not None:
        clock.set(at - timedelta(milliseconds=1))
        assert alarms.fire(ticket.id, "c-timer") == []  # a hair early: nothing yet
        clock.set(at)
        fired.append((at - opened, alarms.fire(ticket.id, "c-timer")))
    assert fired == [
        (timedelta(minutes=22, seconds=30), ["sla.warning"]),  # 75 % of 30 min
        (timedelta(minutes=30), ["sla.breached", "ticket.escalated"]),
        (timedelta(minutes=90), ["sla.warning"]),
        (timedelta(hours=2), ["sla.breached", "ticket.escalated"]),
        (timedelta(hours=36), ["sla.warning"]),
        (timedelta(hours=48), ["sla.breached", "ticket.escalated"]),
    ]
    history = alerts(service, ticket)
    assert [summary(e) for e in history] == [
        ("sla.warning", "response"), ("sla.breached", "response"), ("ticket.escalated", "L2"),
        ("sla.warning", "on_site"), ("sla.breached", "on_site"), ("ticket.escalated", "L3"),
        ("sla.warning", "resolution"), ("sla.breached", "resolution"), ("ticket.escalated", "L4"),
    ]
    for entry in history:
        assert entry["actor"] == SLA_CLOCK and entry["correlation_id"] == "c-timer"
        if entry["type"] != "ticket.escalated":
            assert instant(entry["recorded_at"]) == instant(entry["data"]["due_at"])  # to the microsecond
    escalations = [e["data"] for e in history if e["type"] == "ticket.escalated"]
    assert [(e["previous"], e["level"], e["trigger"]) for e in escalations] == [
        ("L1", "L2", "breach:response"), ("L2", "L3", "breach:on_site"), ("L3", "L4", "breach:resolution"),
    ]
    assert alarms.next_instant(ticket.id) is None  # nothing more is owed


def test_firing_twice_records_once(service: Intake, alarms: SlaAlarms, clock: FakeClock) -> None:
    ticket = open_ticket(service)
    clock.advance(minutes=30)
    assert alarms.fire(ticket.id, "c-1") == ["sla.breached", "ticket.escalated"]
    assert alarms.fire(ticket.id, "c-2") == []
    assert [summary(e) for e in alerts(service, ticket)] == [("sla.breached", "response"), ("ticket.escalated", "L2")]


def test_deadlines_missed_while_down_all_fire_at_once_without_stale_warnings(
    service: Intake, alarms: SlaAlarms, clock: FakeClock
) -> None:
    opened = clock.now()
    ticket = open_ticket(service)
    clock.advance(hours=3)  # the service was down past the response and on-site deadlines
    assert alarms.fire(ticket.id, "c") == ["sla.breached", "ticket.escalated", "sla.breached", "ticket.escalated"]
    history = alerts(service, ticket)
    assert [summary(e) for e in history] == [
        ("sla.breached", "response"), ("ticket.escalated", "L2"), ("sla.breached", "on_site"), ("ticket.escalated", "L3"),
    ]
    assert [instant(e["data"]["due_at"]) for e in history if e["type"] == "sla.breached"] == [
        opened + timedelta(minutes=30), opened + timedelta(hours=2),
    ]
    assert alarms.next_instant(ticket.id) == opened + timedelta(hours=36)  # the resolution warning is still owed


def test_nothing_fires_while_awaiting_the_customer_and_the_pause_moves_the_due_instant(
    service: Intake, alarms: SlaAlarms, clock: FakeClock
) -> None:
    ticket = open_ticket(service)
    clock.advance(minutes=5)
    act(service, ticket, "acknowledge", plan="远程排查")
    clock.advance(minutes=5)
    act(service, ticket, "await_customer", reason="机房门禁未开")
    assert alarms.next_instant(ticket.id) is None
    clock.advance(days=3)
    assert alarms.fire(ticket.id, "c") == []
    act(service, ticket, "record_customer_response", message="已开门")
    resumed = clock.now()
    # On site: 10 of its 120 minutes were used before the pause; the warning at 90 minutes.
    assert alarms.next_instant(ticket.id) == resumed + timedelta(minutes=80)
    clock.set(resumed + timedelta(minutes=110))
    assert alarms.fire(ticket.id, "c") == ["sla.breached", "ticket.escalated"]
    (breach, escalation) = alerts(service, ticket)
    assert summary(breach) == ("sla.breached", "on_site")
    assert instant(breach["data"]["due_at"]) == resumed + timedelta(minutes=110)
    assert escalation["data"]["level"] == "L3"


def test_a_retroactive_severity_change_breaches_at_once(service: Intake, alarms: SlaAlarms, clock: FakeClock) -> None:
    opened = clock.now()
    ticket = open_ticket(service, severity="P3")  # response 4 h
    clock.advance(minutes=40)
    assert alarms.fire(ticket.id, "c") == []
    act(service, ticket, "change_severity", severity=Severity.P1, reason="全厂停产")
    # A P1 answer was due 30 minutes after the report: already missed.
    assert alarms.fire(ticket.id, "c") == ["sla.breached", "ticket.escalated"]
    (breach, _) = alerts(service, ticket)
    assert summary(breach) == ("sla.breached", "response")
    assert (instant(breach["data"]["due_at"]), instant(breach["recorded_at"])) == (
        opened + timedelta(minutes=30), opened + timedelta(minutes=40),
    )


def test_a_reopen_starts_a_new_resolution_cycle_that_does_not_breach_at_once(
    service: Intake, alarms: SlaAlarms, clock: FakeClock
) -> None:
    ticket = open_ticket(service)
    clock.advance(minutes=10)
    act(service, ticket, "acknowledge", plan="上门")
    clock.advance(minutes=50)
    act(service, ticket, "arrive", engineer="E-HZ-01", note="")
    clock.advance(minutes=30)
    act(service, ticket, "resolve", resolution="更换电源", cause="电源故障")
    clock.advance(hours=50)  # past the first cycle's 48 hours
    act(service, ticket, "reopen", reason="故障复现")
    reopened = clock.now()
    assert alarms.fire(ticket.id, "c") == []
    assert alarms.next_instant(ticket.id) == reopened + timedelta(hours=36)
    clock.set(reopened + timedelta(hours=48))
    assert alarms.fire(ticket.id, "c") == ["sla.breached", "ticket.escalated"]
    (breach, _) = alerts(service, ticket)
    assert (breach["data"]["target"], breach["data"]["cycle"]) == ("resolution", 2)


def test_a_ticket_without_a_commitment_arms_nothing(service: Intake, alarms: SlaAlarms, clock: FakeClock) -> None:
    ticket = open_ticket(service, contract=None)
    assert alarms.next_instant(ticket.id) is None
    clock.advance(days=30)
    assert alarms.fire(ticket.id, "c") == []
    assert alerts(service, ticket) == []


def test_two_instances_racing_on_one_firing_record_one_breach(postgres_url: str, clock: FakeClock) -> None:
    service = intake(Settings(database_url=postgres_url, contracts_file=CONTRACTS), clock=clock)
    stores = [open_store(postgres_url) for _ in range(2)]
    try:
        tickets = [open_ticket(service) for _ in range(10)]
        clock.advance(minutes=30)
        instances = [SlaAlarms(store, service.policy, clock) for store in stores]
        with ThreadPoolExecutor(2) as pool:
            for ticket in tickets:
                start = threading.Barrier(2)

                def fire(alarms: SlaAlarms, ticket: Ticket = ticket, start: threading.Barrier = start) -> list[str]:
                    start.wait()
                    return alarms.fire(ticket.id, "c-race")

                results = list(pool.map(fire, instances))
                assert sorted(results) == [[], ["sla.breached", "ticket.escalated"]]
                assert [summary(e) for e in alerts(service, ticket)] == [
                    ("sla.breached", "response"), ("ticket.escalated", "L2"),
                ]
    finally:
        for store in stores:
            store.close()
        service.close()


def test_a_batch_settles_each_ticket_as_alone_and_an_unknown_one_apart(
    service: Intake, alarms: SlaAlarms, clock: FakeClock
) -> None:
    due = [open_ticket(service) for _ in range(3)]
    clock.advance(minutes=20)
    later = open_ticket(service)  # its response warning is 22.5 min away
    clock.advance(minutes=10)
    unknown = uuid4()

    outcomes = alarms.settle_many({t.id: f"c-{i}" for i, t in enumerate([*due, later])} | {unknown: "c-x"})

    assert isinstance(outcomes[unknown], TicketNotFound)
    for ticket in due:
        assert outcomes[ticket.id].recorded == ["sla.breached", "ticket.escalated"]
        assert outcomes[ticket.id].version == ticket.version + 2
        assert outcomes[ticket.id].next_at == instant_plus(ticket, hours=1.5)  # the on-site warning
        assert [summary(e) for e in alerts(service, ticket)] == [("sla.breached", "response"), ("ticket.escalated", "L2")]
    assert outcomes[later.id] == Settled([], later.version, instant_plus(later, minutes=22.5))
    assert alerts(service, later) == []


def test_two_instances_racing_on_one_batch_record_each_breach_once(postgres_url: str, clock: FakeClock) -> None:
    service = intake(Settings(database_url=postgres_url, contracts_file=CONTRACTS), clock=clock)
    stores = [open_store(postgres_url) for _ in range(2)]
    try:
        tickets = [open_ticket(service) for _ in range(20)]
        clock.advance(minutes=30)
        instances = [SlaAlarms(store, service.policy, clock) for store in stores]
        start = threading.Barrier(2)

        def settle(alarms: SlaAlarms) -> dict[UUID, Any]:
            start.wait()
            return alarms.settle_many({t.id: "c-race" for t in tickets})

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(settle, instances)
        for ticket in tickets:
            assert sorted([first[ticket.id].recorded, second[ticket.id].recorded]) == [
                [], ["sla.breached", "ticket.escalated"]]
            assert first[ticket.id].version == second[ticket.id].version == ticket.version + 2
            assert [summary(e) for e in alerts(service, ticket)] == [
                ("sla.breached", "response"), ("ticket.escalated", "L2"),
            ]
    finally:
        for store in stores:
            store.close()
        service.close()


def instant_plus(ticket: Ticket, **elapsed: float) -> datetime:
    return ticket.received_at + timedelta(**elapsed)


# -- the worker, against a real nats-server and real time -----------------------------


@dataclass
class Running:
    service: Intake
    alarms: SlaAlarms
    js: JetStreamContext
    stop: asyncio.Event
    clocking: asyncio.Task[None]


@asynccontextmanager
async def relay_and_clock(
    database_url: str, nats_url: str, alarms_kind: type[SlaAlarms] = SlaAlarms
) -> AsyncIterator[Running]:
    """Intake, a relay and an SLA clock on the seconds policy, on real NATS and the system
    clock (NATS schedules run on real time); all stopped and closed afterwards."""
    settings = Settings(
        database_url=database_url, policy_file=POLICIES / "seconds.toml", contracts_file=POLICIES / "contracts.toml",
    )
    service = intake(settings)
    relay_store, clock_store = open_store(database_url), open_store(database_url)
    nc = await connect(nats_url)
    js = nc.jetstream()
    await ensure_event_stream(js, "EVENTS")
    await ensure_timer_stream(js, "SLA_TIMERS")
    clock = SystemClock()
    alarms = alarms_kind(clock_store, service.policy, clock)
    worker = SlaClockWorker(alarms, Timers(js, "SLA_TIMERS"), js, "EVENTS", clock)
    stop = asyncio.Event()
    relay = asyncio.create_task(Relay(relay_store, nc, "EVENTS").run(stop))
    clocking = asyncio.create_task(worker.run(stop))
    try:
        yield Running(service, alarms, js, stop, clocking)
    finally:
        stop.set()
        await asyncio.gather(relay, clocking)
        await nc.close()
        relay_store.close()
        clock_store.close()
        service.close()


async def test_a_relayed_p1_gets_its_warning_and_breach_within_a_second(database_url: str, nats_url: str) -> None:
    async with relay_and_clock(database_url, nats_url) as running:
        service = running.service
        # P1 in tests/policies/seconds.toml: response 4 s, on site 8 s; warnings at 50 %.
        ticket = await asyncio.to_thread(open_ticket, service, contract="K-TEST-7X24")
        escalated = await _poll(lambda: asyncio.to_thread(escalations, service, ticket), 10)
        history = alerts(service, ticket)
        assert [summary(e) for e in history] == [
            ("sla.warning", "response"), ("sla.breached", "response"), ("ticket.escalated", "L2"),
            ("sla.warning", "on_site"),  # due at the same instant as the response breach
        ]
        opened = ticket.received_at
        timed = [e for e in history if e["type"] != "ticket.escalated"]
        assert [instant(e["data"]["due_at"]) - opened for e in timed] == [timedelta(seconds=s) for s in (2, 4, 4)]
        lateness = [(instant(e["recorded_at"]) - instant(e["data"]["due_at"])).total_seconds() for e in timed]
        print(f"lateness (s): {lateness}")
        assert all(0 <= late < 1 for late in lateness)
        assert escalated[0]["data"]["trigger"] == "breach:response"
        assert history[0]["correlation_id"] == "c-open"  # from the event that armed the timer

        # Cancelled: nothing more is owed, so the ticket's timer is gone from the stream.
        await asyncio.to_thread(act, service, ticket, "cancel", reason="误报")
        await _poll(lambda: _timer_gone(running.js, ticket), 5)


async def test_dispatch_events_never_reach_the_clock_and_an_older_consumer_is_narrowed(
    database_url: str, nats_url: str
) -> None:
    """An engineer's assignment moves no clock, so the server never delivers it: a storm
    of assignments costs the SLA clock nothing. A consumer an earlier release made for
    every ticket event is narrowed at start, keeping its place."""
    nc = await connect(nats_url)
    js = nc.jetstream()
    await ensure_event_stream(js, "EVENTS")
    await js.add_consumer("EVENTS", ConsumerConfig(name=EVENTS_CONSUMER, durable_name=EVENTS_CONSUMER,
                                                   filter_subject="events.ticket.>", ack_policy=AckPolicy.EXPLICIT))
    await nc.close()
    async with relay_and_clock(database_url, nats_url) as running:
        service = running.service
        ticket = await asyncio.to_thread(open_ticket, service, contract="K-TEST-7X24")
        await _poll(lambda: _delivered(running.js, 1), 5)  # ticket.opened (its SLA commitment is events.sla.*)
        assigned = service.desk.get(ticket.id)
        assigned.assign_engineer(engineer="E-HZ-01", level="L2", role="lead", for_level="L2", rules=[], reason="test",
                                 cause=assigned.version, at=datetime.now(assigned.received_at.tzinfo), actor=SLA_CLOCK,
                                 correlation_id="c-assign")
        await asyncio.to_thread(service.desk.store.save, assigned)
        await asyncio.to_thread(act, service, ticket, "acknowledge", plan="远程排查")
        await _poll(lambda: _delivered(running.js, 2), 5)  # the acknowledgement, not the assignment
        info = await running.js.consumer_info("EVENTS", EVENTS_CONSUMER)
        history = [e["type"] for e in map(history_entry, service.desk.history(ticket.id))]
    assert history[-2:] == ["ticket.engineer_assigned", "ticket.acknowledged"]
    assert info.delivered.consumer_seq == 2 and info.num_pending == 0
    assert set(info.config.filter_subjects or []) == set(TICKET_EVENTS)
    assert "events.ticket.acknowledged" in TICKET_EVENTS and "events.ticket.engineer_assigned" not in TICKET_EVENTS


async def _delivered(js: JetStreamContext, count: int) -> bool:
    info = await js.consumer_info("EVENTS", EVENTS_CONSUMER)
    return info.delivered.consumer_seq >= count and info.num_ack_pending == 0


class SlowAlarms(SlaAlarms):
    """The real alarms, with a store call outlasting the clock's noticing a stop (it
    looks between fetches)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.entered, self.finished = threading.Event(), threading.Event()

    def settle_many(self, correlation: dict[UUID, str]) -> dict[UUID, Any]:
        self.entered.set()
        time.sleep(2.5 * FETCH_SECONDS)
        outcomes = super().settle_many(correlation)
        self.finished.set()
        return outcomes


async def test_a_stopped_clock_returns_only_once_its_store_calls_have_ended(database_url: str, nats_url: str) -> None:
    """The process closes the store as soon as the clock returns: a settle still running
    in a thread would use a closed store (on SQLite, a crash)."""
    async with relay_and_clock(database_url, nats_url, SlowAlarms) as running:
        alarms = running.alarms
        assert isinstance(alarms, SlowAlarms)
        await asyncio.to_thread(open_ticket, running.service, contract="K-TEST-7X24")
        assert await asyncio.to_thread(alarms.entered.wait, 10)
        running.stop.set()
        await asyncio.wait_for(running.clocking, 10)
        assert alarms.finished.is_set()


async def _timer_gone(js: JetStreamContext, ticket: Ticket) -> bool:
    info = await js.stream_info("SLA_TIMERS", subjects_filter=f"sla.*.{ticket.id}")
    return not info.state.subjects


async def _poll(probe: Callable[[], Awaitable[T]], timeout: float) -> T:
    """The first truthy result of `probe`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if outcome := await probe():
            return outcome
        await asyncio.sleep(0.05)
    pytest.fail(f"condition not met within {timeout}s")
