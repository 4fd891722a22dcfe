"""The relay against real stores (SQLite and PostgreSQL) and a real nats-server:
every public event reaches the stream exactly once, in notification order, through
restarts, a SIGKILL mid-burst and two relays running at once."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from services.relay.worker import Relay, StreamOutOfStep
from shared.bus import CONTENT_TYPE, POSITION_HEADER, connect, ensure_event_stream
from shared.clock import FakeClock
from shared.desk import TicketDesk
from shared.event_format import cloud_event, is_internal, subject
from shared.nats_server import free_port, start_nats_server
from shared.settings import ROOT
from shared.store import EventStore

STREAM = "EVENTS"
CLIENT = {"kind": "client", "id": "zabbix"}
ENGINEER = {"kind": "engineer", "id": "E-001"}
DETAILS = {
    "severity": "P2", "category": "fault", "channel": "monitoring", "customer": "C-汉中电力",
    "contract": "K-1", "site": {"city": "汉中", "region": "陕南"}, "device": {"model": "S5700", "serial": "SN1"},
    "summary": "光模块告警", "description": "uplink flapping", "contact": {"name": "王工"},
    "source": {"system": "zabbix", "reference": "evt-1"},
}


@dataclass(frozen=True)
class Published:
    position: int
    msg_id: str
    content_type: str
    subject: str
    body: dict


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url)
    await ensure_event_stream(client.jetstream(), STREAM)
    yield client
    await client.close()


def record(store: EventStore, clock: FakeClock, tickets: int, *, commands: bool = True) -> None:
    """Open tickets (each also records an internal number event); with `commands`,
    acknowledge every second one and comment on every third."""
    desk = TicketDesk(store, clock)
    for n in range(tickets):
        clock.advance(seconds=1)
        ticket = desk.open(details=DETAILS, token=None, actor=CLIENT, correlation_id=f"c-{n}").ticket
        if not commands:
            continue
        if n % 2 == 0:
            desk.act(ticket.id, "acknowledge", expected_version=None, actor=ENGINEER, correlation_id="c", plan="remote")
        if n % 3 == 0:
            desk.act(ticket.id, "comment", expected_version=None, actor=ENGINEER, correlation_id="c", text="已联系", public=True)


def public_events(store: EventStore) -> list[tuple[int, str, str]]:
    """(notification id, event id, subject) of every public event, in log order."""
    found, position = [], 0
    while notifications := store.recorder.select_notifications(position, 1000, inclusive_of_start=False):
        for notification in notifications:
            event = store.decode(notification)
            if not is_internal(event):
                found.append((notification.id, cloud_event(event, notification.id)["id"], subject(event)))
        position = notifications[-1].id
    return found


async def message_count(js: JetStreamContext) -> int:
    return (await js.stream_info(STREAM)).state.messages


async def count_at_least(js: JetStreamContext, target: int) -> bool:
    return await message_count(js) >= target


async def stream_messages(js: JetStreamContext) -> list[Published]:
    count = await message_count(js)
    sub = await js.subscribe("events.>", stream=STREAM, ordered_consumer=True)
    try:
        messages = [await sub.next_msg(timeout=5) for _ in range(count)]
    finally:
        await sub.unsubscribe()
    return [
        Published(int(m.headers[POSITION_HEADER]), m.headers["Nats-Msg-Id"], m.headers["Content-Type"], m.subject, json.loads(m.data))
        for m in messages
    ]


def assert_exactly_once_in_order(messages: list[Published], expected: list[tuple[int, str, str]]) -> None:
    assert [m.msg_id for m in messages] == [event_id for _, event_id, _ in expected]
    assert [m.position for m in messages] == [position for position, _, _ in expected]
    assert len({m.msg_id for m in messages}) == len(messages)
    assert all(a.position < b.position for a, b in zip(messages, messages[1:]))


async def until(condition: Callable[[], object], timeout: float = 30.0, every: float = 0.01) -> None:
    """Poll `condition` (plain or async) until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(every)


# -- in process ----------------------------------------------------------------------


async def test_publishes_exactly_the_public_events_as_cloud_events(store: EventStore, clock: FakeClock, nc: Client) -> None:
    record(store, clock, 50)
    expected = public_events(store)
    assert len(expected) == 50 + 25 + 17 < store.recorder.max_notification_id()  # the numbers are internal

    assert await Relay(store, nc, STREAM).relay_available() == len(expected)

    messages = await stream_messages(nc.jetstream())
    assert_exactly_once_in_order(messages, expected)
    for message, (_, _, expected_subject) in zip(messages, expected):
        body = message.body
        assert body["specversion"] == "1.0" and body["id"] == message.msg_id and message.content_type == CONTENT_TYPE
        assert body["source"] == "urn:ticketing:ticket" and body["subject"] and body["time"] and isinstance(body["data"], dict)
        assert message.subject == expected_subject == f"events.{body['type']}"
        assert body["position"] == message.position
    opened = messages[0].body
    assert opened["type"] == "ticket.opened" and opened["data"]["site"]["city"] == "汉中"
    assert opened["data"]["number"] == "T-2026-000001" and opened["actorkind"] == "client"
    # Only ticket events: the internal TicketNumberIssued records never leave the store.
    assert {m.subject for m in messages} == {"events.ticket.opened", "events.ticket.acknowledged", "events.ticket.commented"}


async def test_a_restarted_relay_publishes_nothing_twice(store: EventStore, clock: FakeClock, nc: Client) -> None:
    record(store, clock, 10)
    first = await Relay(store, nc, STREAM, window=7).relay_available()
    assert await Relay(store, nc, STREAM).relay_available() == 0

    record(store, clock, 5)
    second = await Relay(store, nc, STREAM, window=3).relay_available()
    expected = public_events(store)
    assert (first, first + second) == (len(expected) - second, len(expected))
    assert_exactly_once_in_order(await stream_messages(nc.jetstream()), expected)


async def test_overlapping_relays_without_the_lock_still_keep_order(store: EventStore, clock: FakeClock, nc: Client) -> None:
    """Even if the lock failed, Nats-Expected-Last-Sequence refuses out-of-step publishes."""
    record(store, clock, 60)
    expected = public_events(store)

    async def relay_until_complete(relay: Relay) -> None:
        while await message_count(nc.jetstream()) < len(expected):
            try:
                await relay.relay_available()
            except (BadRequestError, StreamOutOfStep):
                await asyncio.sleep(0)  # the other relay got there first; the stream is read again

    await asyncio.gather(*(relay_until_complete(Relay(store, nc, STREAM, window=5)) for _ in range(3)))
    assert_exactly_once_in_order(await stream_messages(nc.jetstream()), expected)


async def test_run_wakes_up_promptly_and_stops(store: EventStore, clock: FakeClock, nc: Client) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(Relay(store, nc, STREAM).run(stop))
    js = nc.jetstream()
    lags = []
    for n in range(1, 31):
        await asyncio.to_thread(record, store, clock, 1)  # opened, acknowledged, commented
        recorded = time.monotonic()
        await until(lambda: count_at_least(js, 3 * n), timeout=5, every=0.001)
        lags.append(time.monotonic() - recorded)
    stop.set()
    await asyncio.wait_for(running, 5)
    lags.sort()
    print(f"relay lag over {len(lags)} events: median {lags[len(lags) // 2] * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms")
    assert lags[-1] < 0.5


async def test_a_nats_restart_mid_burst_loses_and_repeats_nothing(store: EventStore, clock: FakeClock, tmp_path: Path) -> None:
    port = free_port()
    server = start_nats_server(tmp_path / "restarted", port)
    nc = await connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    stop = asyncio.Event()
    writer = threading.Thread(target=record, args=(store, clock, 1000), kwargs={"commands": False})
    try:
        await ensure_event_stream(js, STREAM)
        running = asyncio.create_task(Relay(store, nc, STREAM).run(stop))
        writer.start()
        await until(lambda: count_at_least(js, 100), every=0.002)
        server.terminate()
        server.wait(timeout=10)
        assert writer.is_alive(), "the burst ended before the restart: make it longer"
        server = start_nats_server(tmp_path / "restarted", port)  # same storage: the stream survives
        await asyncio.to_thread(writer.join)
        expected = public_events(store)
        await until(lambda: count_at_least(js, len(expected)))
        assert_exactly_once_in_order(await stream_messages(js), expected)
        stop.set()
        await asyncio.wait_for(running, 5)
    finally:
        if writer.is_alive():
            await asyncio.to_thread(writer.join)
        await nc.close()
        server.terminate()
        server.wait(timeout=10)


# -- as processes ----------------------------------------------------------------------


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_relay(database_url: str, nats_url: str, log: Path) -> RelayProcess:
    env = os.environ | {"TICKETING_DATABASE_URL": database_url, "TICKETING_NATS_URL": nats_url, "TICKETING_STREAM_NAME": STREAM}
    output = open(log, "wb")  # noqa: SIM115 - the child writes to it
    process = subprocess.Popen([sys.executable, "-m", "services.relay"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    output.close()
    return RelayProcess(process, log)


@pytest.fixture
def relays() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        if relay.process.poll() is None:
            relay.process.kill()
        relay.process.wait(timeout=10)


async def test_sigkill_mid_burst_loses_and_repeats_nothing(
    store: EventStore, clock: FakeClock, database_url: str, nats_url: str, tmp_path: Path, relays: list[RelayProcess]
) -> None:
    nc = await connect(nats_url)
    js = nc.jetstream()
    writer = threading.Thread(target=record, args=(store, clock, 1500), kwargs={"commands": False})  # 3,000 records
    try:
        relays.append(start_relay(database_url, nats_url, tmp_path / "relay-1.log"))
        await until(lambda: "acquired the lock" in relays[0].output())
        writer.start()

        await until(lambda: count_at_least(js, 100), every=0.002)
        relays[0].process.send_signal(signal.SIGKILL)
        relays[0].process.wait(timeout=10)
        at_kill = await message_count(js)
        assert writer.is_alive(), "the burst ended before the kill: make it longer"

        relays.append(start_relay(database_url, nats_url, tmp_path / "relay-2.log"))
        await asyncio.to_thread(writer.join)
        expected = public_events(store)
        assert 0 < at_kill < len(expected)
        await until(lambda: count_at_least(js, len(expected)))

        assert_exactly_once_in_order(await stream_messages(js), expected)
        assert "acquired the lock" in relays[1].output()
    finally:
        if writer.is_alive():
            await asyncio.to_thread(writer.join)
        await nc.close()


async def test_two_relays_at_once_one_leads_the_other_takes_over(
    store: EventStore, clock: FakeClock, database_url: str, nats_url: str, tmp_path: Path, relays: list[RelayProcess]
) -> None:
    nc = await connect(nats_url)
    js = nc.jetstream()
    try:
        relays.extend(start_relay(database_url, nats_url, tmp_path / f"relay-{n}.log") for n in (1, 2))
        await until(lambda: sorted(("acquired the lock" in r.output(), "standing by" in r.output()) for r in relays)
                    == [(False, True), (True, False)])
        await asyncio.to_thread(record, store, clock, 300)
        await until(lambda: count_at_least(js, len(public_events(store))))
        leaders = [r for r in relays if "acquired the lock" in r.output()]
        assert len(leaders) == 1, "both relays held the lock"

        leaders[0].process.send_signal(signal.SIGKILL)
        leaders[0].process.wait(timeout=10)
        await asyncio.to_thread(record, store, clock, 300)
        expected = public_events(store)
        await until(lambda: count_at_least(js, len(expected)))
        assert_exactly_once_in_order(await stream_messages(js), expected)

        standby = next(r for r in relays if r is not leaders[0])
        assert "acquired the lock" in standby.output()
        standby.process.send_signal(signal.SIGTERM)
        assert standby.process.wait(timeout=10) == 0
        assert "relay stopped" in standby.output()
    finally:
        await nc.close()
