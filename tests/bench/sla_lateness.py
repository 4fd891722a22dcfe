"""`make bench`, the SLA clock section (issue 3): open tickets whose deadlines fall due
over a few minutes, with the relay and the sla_clock running as real processes on
PostgreSQL and NATS from the wheel.

    .venv/bin/python -m tests.bench.sla_lateness     # this section alone
    BENCH_SLA_TICKETS=2000 .venv/bin/python -m tests.bench.sla_lateness

Phases, each with its own deadline:

1. load     BENCH_SLA_TICKETS tickets (default 100,000) are opened through TicketDesk +
            Commitments by BENCH_SLA_LOADERS processes × BENCH_SLA_LOADER_THREADS threads
            (no HTTP; no relay or sla_clock running yet) on tests/bench/policy_minutes.toml
            (7×24, response 2–4 h by severity, warnings at 99 %). Each ticket's received
            instant is backdated by its severity's response target so that the breaches
            fall due evenly over BENCH_SLA_SPREAD seconds (default 600), starting once
            loading, arming and the restart should be over; each warning falls due
            72–144 s before its breach. Severities cycle P1…P4.
2. arm      the relay and BENCH_SLA_INSTANCES sla_clock processes (default 2: they
            share the consumers, as in production) start on that backlog; timed until SLA_TIMERS
            holds one schedule per ticket.
3. restart  every sla_clock is killed with SIGKILL and started again; timed until they are
            subscribed and their consumers have nothing pending or unacknowledged. The
            schedules live in JetStream, so nothing has to be armed again: the figure
            is what a restart costs before deadlines are kept again.
4. fire     the deadlines fall due; every SlaWarning and SlaBreached is read back from
            the store: lateness = the event's timestamp − its due_at. Expected: exactly
            one warning and one breach (response, cycle 1) per ticket. Alerts still
            missing BENCH_SLA_GRACE seconds (default 120) after the last due instant
            count as later than that.

Bounded: the section plans to take at most BENCH_SLA_BUDGET seconds (default 1600). The
schedule is fixed before loading, from planned rates or BENCH_SLA_GAP: the opening rate
is the loaders' own, measured first on a schema of their own (TRIAL_TICKETS tickets;
BENCH_SLA_OPEN_RATE instead skips the trial), the arming rate BENCH_SLA_ARM_RATE. A
slow hour of this machine opens a quarter as many tickets a second as a fast one (253
against 1,087 in `make bench`, 2026-12-08), so a rate fixed for one hour loads too few
tickets in another, or idles for minutes.
When the tickets asked for cannot be loaded and armed in the budget,
loading stops at its deadline and the rows say how many were opened. Their breaches
then fall due at the rate the full count would have (count / spread), over a shorter
time. A row says so when the sla_clock was not caught up before the first warning.

Also reported: the busiest 10 s of recording against the busiest 10 s falling due, the
peak resident memory (VmHWM) of the largest sla_clock process and of the NATS server, and as
a baseline the NATS server's own lateness firing the schedules (stored time of a
sample of fired timers − the instant they were scheduled for). Processes, the JetStream
directory and the PostgreSQL schema are removed at the end.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import psycopg
from eventsourcing.utils import get_topic
from nats.js.errors import NotFoundError

from services.sla_clock.timers import DUE_PREFIX, LEAD_SECONDS
from services.sla_clock.worker import DUE_CONSUMER, EVENTS_CONSUMER
from shared.clock import FakeClock, SystemClock
from shared.contracts import ContractBook
from shared.desk import TicketDesk
from shared.domain.contract import Contract
from shared.domain.ticket import Ticket
from shared.nats_server import free_port, start_nats_server
from shared.sla.commitments import Commitments
from shared.sla.policy import SEVERITIES, load_policy
from shared.store import EventStore, open_store
from tests.bench.load import percentile
from tests.bench.processes import cpu_seconds, peak_kib
from tests.product import ROOT

Row = tuple[str, str, str, str]  # what, figure, baseline, ratio (as in tests/bench/run.py)

POLICY = Path(__file__).with_name("policy_minutes.toml")
CONTRACTS = ROOT / "tests" / "policies" / "contracts.toml"
CONTRACT = "K-TEST-7X24"  # premium, valid until 2099: 7×24 on POLICY

SLA_TICKETS = int(os.environ.get("BENCH_SLA_TICKETS", "100000"))
SPREAD = float(os.environ.get("BENCH_SLA_SPREAD", "600"))  # breaches fall due over this many seconds
LOADERS = int(os.environ.get("BENCH_SLA_LOADERS", "2"))  # loader processes
INSTANCES = int(os.environ.get("BENCH_SLA_INSTANCES", "2"))  # sla_clock processes sharing the consumers
LOADER_THREADS = int(os.environ.get("BENCH_SLA_LOADER_THREADS", "4"))  # threads per loader process
GRACE = float(os.environ.get("BENCH_SLA_GRACE", "120"))  # waited past the last due instant for stragglers
BUDGET = float(os.environ.get("BENCH_SLA_BUDGET", "1600"))  # seconds the section plans to take, at most
# Rates only to plan the schedule; a run reports what it measured. BENCH_SLA_GAP
# overrides the plan.
TRIAL_TICKETS = 3000  # opened to measure the loaders' rate: a few seconds' work on a fast hour
# The trial opens into empty tables; 100,000 tickets later each insert costs a little more.
TRIAL_SHARE = 0.8
OPEN_RATE = os.environ.get("BENCH_SLA_OPEN_RATE")  # tickets/s, all loaders; unset: measured by the trial
PLANNED_ARM_RATE = float(os.environ.get("BENCH_SLA_ARM_RATE", "800"))  # tickets/s, the sla_clock processes together
STARTUP = 15.0  # seconds for a fresh Python process to import the project on a loaded machine
RESTART_BOUND = 60.0  # seconds; a message held by the killed instance comes back after 10 s
POLL_SECONDS = 1.0
ALERT_TOPICS = {get_topic(Ticket.SlaWarning): "warning", get_topic(Ticket.SlaBreached): "breach"}
BASELINE_SAMPLE = 2000  # fired timers read back for the NATS schedule baseline


@dataclass(frozen=True)
class Schedule:
    """Where the deadlines fall: breach i (of n) at first_breach + spread·i/n."""

    tickets: int
    first_breach: datetime
    spread: float
    response: dict[str, float]  # severity → response target, seconds

    def severity(self, index: int) -> str:
        return SEVERITIES[index % len(SEVERITIES)]

    def breach(self, index: int) -> datetime:
        return self.first_breach + timedelta(seconds=self.spread * index / self.tickets)

    def received(self, index: int) -> datetime:
        return self.breach(index) - timedelta(seconds=self.response[self.severity(index)])


@dataclass
class Alerts:
    """Every SlaWarning / SlaBreached read back so far."""

    position: int = 0
    lateness: dict[str, list[float]] = field(default_factory=lambda: {"warning": [], "breach": []})
    seen: Counter[tuple[str, UUID, str, int]] = field(default_factory=Counter)
    due: dict[UUID, datetime] = field(default_factory=dict)  # breach due instant per ticket
    recorded_at: list[float] = field(default_factory=list)  # every alert's timestamp (epoch seconds)
    due_at: list[float] = field(default_factory=list)  # and its due instant

    def count(self, kind: str) -> int:
        return sum(1 for key in self.seen if key[0] == kind)

    def duplicates(self, kind: str) -> int:
        return sum(n - 1 for key, n in self.seen.items() if key[0] == kind)


# -- loading (in loader processes) ------------------------------------------------------


class _PresetNumbers(TicketDesk):
    """Each loader is handed its tickets' numbers (index + 1), so loaders never race
    for the next number of the year; everything else is TicketDesk.open."""

    sequence = 0

    def _next_number(self, year: int) -> int:
        return self.sequence


class _OneContract:
    """The contract, read once: every ticket of the run is on it."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def find(self, code: str) -> Contract | None:
        return self.contract if code == self.contract.code else None


def _load_share(database_url: str, schedule: Schedule, process: int, processes: int, threads: int,
                stop_at: float, progress: Any) -> None:
    """(A loader process.) Open every (processes·threads)-th ticket in `threads` threads,
    each with its own desk, until done or `stop_at` (time.time()). progress[slot] counts
    the tickets thread `slot` opened: tickets slot, slot + stride, … in that order."""
    try:
        store = open_store(database_url)
        policy = load_policy(POLICY)
        commitments = Commitments(policy, _OneContract(ContractBook(store, SystemClock()).get(CONTRACT)))
        stride = processes * threads
        failures: list[BaseException] = []

        def run(slot: int) -> None:
            clock = FakeClock(schedule.received(slot))
            desk = _PresetNumbers(store, clock, commitments=commitments)
            actor = {"kind": "client", "id": "bench-sla"}
            try:
                for i in range(slot, schedule.tickets, stride):
                    if time.time() > stop_at:
                        break
                    clock.set(schedule.received(i))
                    desk.sequence = i + 1
                    details = {
                        "severity": schedule.severity(i), "category": "fault", "channel": "monitoring",
                        "customer": "C-汉中电力", "contract": CONTRACT, "site": {"city": "汉中"}, "device": {},
                        "summary": f"bench SLA ticket {i}", "description": "", "contact": {},
                        "source": {"system": "bench"},
                    }
                    desk.open(details=details, token=None, actor=actor, correlation_id=f"bench-sla-{i}")
                    progress[slot] += 1
            except BaseException as error:  # noqa: BLE001 - reported by the process
                failures.append(error)

        workers = [threading.Thread(target=run, args=(process * threads + t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        store.close()
        if failures:
            raise failures[0]
    except BaseException:
        traceback.print_exc()
        sys.exit(1)


def _load(database_url: str, schedule: Schedule, stop_at: float) -> tuple[int, int, float]:
    """Open the tickets with LOADERS processes of LOADER_THREADS threads; returns
    (tickets opened, how many of the first tickets were all opened, seconds from
    the first ticket opened to the last: process start-up not included)."""
    context = multiprocessing.get_context("spawn")
    progress = context.Array("q", LOADERS * LOADER_THREADS, lock=False)
    processes = [
        context.Process(target=_load_share, args=(database_url, schedule, i, LOADERS, LOADER_THREADS, stop_at, progress),
                        daemon=True)
        for i in range(LOADERS)
    ]
    began = time.perf_counter()
    for process in processes:
        process.start()
    last_print = first = began
    try:
        while any(p.is_alive() for p in processes):
            if time.time() > stop_at + 30:
                raise TimeoutError("loaders did not stop by their deadline")
            time.sleep(0.1)
            if first == began and sum(progress):
                first = time.perf_counter()  # the processes have started
            if time.perf_counter() - last_print > 15:
                last_print = time.perf_counter()
                print(f"  sla: opened {sum(progress):,}/{schedule.tickets:,}", flush=True)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join(5)
    elapsed = time.perf_counter() - first
    if failed := [p.exitcode for p in processes if p.exitcode]:
        raise RuntimeError(f"loader processes failed (exit codes {failed}); see their tracebacks above")
    # Slot s opened tickets s, s + stride, …: the first min(count)·stride tickets are all there.
    stride = len(progress)
    return sum(progress), min(progress) * stride, elapsed


# -- processes ----------------------------------------------------------------------------


@dataclass
class Service:
    module: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Services:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[Service] = []

    def start(self, module: str) -> Service:
        log = self.logs / f"{module}.{len(self.started)}.log"
        with open(log, "wb") as output:  # the child keeps its own descriptor
            process = subprocess.Popen([sys.executable, "-m", module], env=self.env, cwd=ROOT,
                                       stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        service = Service(module, process, log)
        self.started.append(service)
        return service

    def check_alive(self) -> None:
        for service in self.started:
            if service.process.poll() is not None and service.process.returncode != -signal.SIGKILL:
                raise RuntimeError(f"{service.module} exited with {service.process.returncode}:\n{service.output()[-3000:]}")

    def stop(self) -> None:
        for service in reversed(self.started):
            if service.process.poll() is None:
                service.process.terminate()
        deadline = time.monotonic() + 10
        for service in reversed(self.started):
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(5)


def cpu_shares(samples: list[tuple[float, float]], window: float = 10.0) -> tuple[float, float]:
    """From (monotonic, cpu seconds) samples: the share of a core used overall, and in
    the busiest `window` seconds."""
    if len(samples) < 2:
        return 0.0, 0.0
    mean = (samples[-1][1] - samples[0][1]) / max(1e-3, samples[-1][0] - samples[0][0])
    busiest, start = 0.0, 0
    for end in range(1, len(samples)):
        while samples[end][0] - samples[start + 1][0] >= window:
            start += 1
        span = samples[end][0] - samples[start][0]
        if span >= window / 2:
            busiest = max(busiest, (samples[end][1] - samples[start][1]) / span)
    return mean, max(busiest, mean)


# -- watching NATS and the store ------------------------------------------------------------


async def _timers(js: Any) -> int:
    """Messages in SLA_TIMERS: before anything falls due, one pending schedule per armed ticket."""
    try:
        return (await js.stream_info("SLA_TIMERS")).state.messages
    except NotFoundError:
        return 0


async def _idle(js: Any) -> bool:
    """Nothing waiting for, or held by, the sla_clock's two consumers."""
    try:
        consumers = [await js.consumer_info("EVENTS", EVENTS_CONSUMER), await js.consumer_info("SLA_TIMERS", DUE_CONSUMER)]
    except NotFoundError:
        return False
    return all(c.num_pending == 0 and c.num_ack_pending == 0 for c in consumers)


async def _wait(what: str, check: Any, deadline: float, services: Services) -> bool:
    """Poll `check()` until true (True) or time.monotonic() passes `deadline` (False)."""
    while time.monotonic() < deadline:
        services.check_alive()
        if await check():
            return True
        await asyncio.sleep(POLL_SECONDS)
    print(f"  sla: gave up waiting for {what}", flush=True)
    return False


def _read_alerts(store: Any, alerts: Alerts) -> None:
    """(In a thread.) Read the warnings and breaches recorded since the last call."""
    while batch := store.recorder.select_notifications(alerts.position, 5000, topics=list(ALERT_TOPICS),
                                                       inclusive_of_start=False):
        for notification in batch:
            event = store.decode(notification)
            kind = ALERT_TOPICS[notification.topic]
            alerts.seen[(kind, event.originator_id, event.target, event.cycle)] += 1
            alerts.lateness[kind].append((event.timestamp - event.due_at).total_seconds())
            alerts.recorded_at.append(event.timestamp.timestamp())
            alerts.due_at.append(event.due_at.timestamp())
            if kind == "breach":
                alerts.due[event.originator_id] = event.due_at
        alerts.position = batch[-1].id


async def _schedule_lateness(js: Any, alerts: Alerts) -> list[float]:
    """The NATS server's own lateness on a sample of fired timers: the stored time of
    sla.due.<ticket> − the instant its schedule named (the breach's due − LEAD_SECONDS)."""
    late = []
    for ticket_id in list(alerts.due)[:: max(1, len(alerts.due) // BASELINE_SAMPLE)][:BASELINE_SAMPLE]:
        try:
            message = await js.get_last_msg("SLA_TIMERS", f"{DUE_PREFIX}.{ticket_id}")
        except NotFoundError:
            continue
        scheduled = alerts.due[ticket_id] - timedelta(seconds=LEAD_SECONDS)
        if message.time:
            late.append((message.time - scheduled).total_seconds())
    return late


# -- the section -------------------------------------------------------------------------


def busiest(instants: list[float], window: float = 10.0) -> float:
    """The most instants in any `window` seconds, per second."""
    ordered, most, start = sorted(instants), 0, 0
    for end, instant in enumerate(ordered):
        while instant - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most / window


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.0%}" if baseline else "—"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _spread_of(values: list[float], missing: int = 0, waited: float = 0.0) -> str:
    """p50, p99 and max; `missing` values never came within `waited` seconds of their due
    instant, so they count as later than that."""
    if not values and not missing:
        return "none recorded"
    everything = values + [float("inf")] * missing

    def show(seconds: float) -> str:
        return f"> {waited:,.0f} s" if seconds == float("inf") else _ms(seconds)

    return f"p50 {show(percentile(everything, .5))}, p99 {show(percentile(everything, .99))}, max {show(max(everything))}"


@dataclass(frozen=True)
class Plan:
    """When each phase must be over, in seconds from the start of the section."""

    gap: float  # to the first warning falling due
    load: float  # loaders stop here
    capped: bool  # the gap was cut to fit BUDGET: fewer tickets may be opened than asked


def plan(tickets: int, max_lead: float, open_rate: float) -> Plan:
    load, arm = STARTUP + tickets / open_rate, STARTUP + tickets / PLANNED_ARM_RATE
    wanted = 1.3 * (load + arm) + RESTART_BOUND / 2
    if "BENCH_SLA_GAP" in os.environ:
        wanted = float(os.environ["BENCH_SLA_GAP"])
    room = BUDGET - max_lead - SPREAD - GRACE  # the rest of the budget is the spread and the wait after it
    if room < 2 * STARTUP + RESTART_BOUND:
        raise ValueError(f"BENCH_SLA_BUDGET={BUDGET:.0f} s leaves {room:.0f} s for loading and arming: "
                         f"raise it, or shorten BENCH_SLA_SPREAD / BENCH_SLA_GRACE")
    gap = min(wanted, room)
    return Plan(gap=gap, load=(gap - RESTART_BOUND / 2) * load / (load + arm), capped=gap < wanted)


def planned_open_rate(postgres_url: str, response: dict[str, float]) -> float:
    """BENCH_SLA_OPEN_RATE, or TRIAL_SHARE of the rate the loaders open TRIAL_TICKETS
    tickets at, on a schema dropped afterwards."""
    if OPEN_RATE is not None:
        return float(OPEN_RATE)
    schema = f"bench_{int(time.time())}_sla_trial"
    database_url = f"{postgres_url}?schema={schema}"
    try:
        _open_schema(database_url).close()
        soon = datetime.now(timezone.utc) + timedelta(seconds=SPREAD)
        opened, _, seconds = _load(database_url, Schedule(TRIAL_TICKETS, soon, SPREAD, response), time.time() + 120)
    finally:
        _drop_schema(postgres_url, schema)
    if not opened:
        raise RuntimeError("the loaders' trial opened no ticket in 120 s")
    print(f"  sla: the loaders' trial opened {opened:,} tickets at {opened / seconds:,.0f}/s", flush=True)
    return TRIAL_SHARE * opened / seconds


def _open_schema(database_url: str) -> EventStore:
    """The store, its tables created and the contracts loaded, before the loaders share them."""
    store = open_store(database_url)
    ContractBook(store, SystemClock(), levels=load_policy(POLICY).levels).load_file(
        CONTRACTS, actor={"kind": "service", "id": "bench"})
    return store


def _drop_schema(postgres_url: str, schema: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


async def sla_lateness(work: Path, postgres_url: str, tickets: int) -> list[Row]:
    schema = f"bench_{int(time.time())}_sla"
    database_url = f"{postgres_url}?schema={schema}"
    policy = load_policy(POLICY)
    response = {s: policy.targets[s]["response"] for s in SEVERITIES}
    lead = {s: (1 - policy.warning_ratio) * t for s, t in response.items()}
    timing = plan(tickets, max(lead.values()), planned_open_rate(postgres_url, response))
    began = datetime.now(timezone.utc)
    schedule = Schedule(tickets, began + timedelta(seconds=timing.gap + max(lead.values())), SPREAD, response)
    first_alert = min(schedule.breach(i) - timedelta(seconds=lead[schedule.severity(i)]) for i in range(min(4, tickets)))
    if (schedule.breach(tickets - 1) - began).total_seconds() > min(response.values()) - 60:
        raise ValueError(f"the schedule ({timing.gap:.0f} + {SPREAD:.0f} s) does not fit in the shortest response "
                         f"target of {POLICY.name} ({min(response.values()):.0f} s): received instants would be in the future")
    print(f"sla: {tickets:,} tickets; loading for at most {timing.load:.0f} s; first warning due in {timing.gap:.0f} s, "
          f"breaches over {SPREAD:.0f} s; done by ~{timing.gap + max(lead.values()) + SPREAD + GRACE:.0f} s", flush=True)

    nats_port = free_port()
    nats_server = start_nats_server(work / "sla-jetstream", nats_port, log_file=work / "sla-nats.log")
    nats_url = f"nats://127.0.0.1:{nats_port}"
    logs = work / "sla-logs"
    logs.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETING_")} | {
        "TICKETING_DATABASE_URL": database_url, "TICKETING_NATS_URL": nats_url,
        "TICKETING_POLICY_FILE": str(POLICY), "TICKETING_DATA_DIR": str(work / "sla-var"),
    }
    services = Services(env, logs)
    store = None
    client = None
    try:
        store = _open_schema(database_url)

        # 1. load
        opened, complete, load_seconds = await asyncio.to_thread(
            _load, database_url, schedule, began.timestamp() + timing.load)
        print(f"  sla: opened {opened:,} tickets in {load_seconds:.1f} s", flush=True)
        # The loaders stop together, so the tickets opened are the first ones (≤ stride missing at the end).
        last_breach = schedule.breach(max(0, min(tickets, complete + LOADERS * LOADER_THREADS) - 1))
        client = await nats.connect(nats_url)
        js = client.jetstream()

        # 2. arm: the relay and an sla_clock start on the backlog
        relay_started = time.monotonic()
        services.start("services.relay")
        clocks = [services.start("services.sla_clock") for _ in range(INSTANCES)]
        relayed_at: list[float] = []

        async def relayed() -> bool:
            try:
                state = (await js.stream_info("EVENTS")).state
            except NotFoundError:
                return False
            done = state.messages >= 2 * opened  # ticket.opened + sla.committed per ticket
            if done and not relayed_at:
                relayed_at.append(time.monotonic() - relay_started)
            return done

        first_armed: list[float] = []

        async def armed() -> bool:
            await relayed()
            count = await _timers(js)
            if count and not first_armed:
                first_armed.append(time.monotonic())
            return count >= opened

        arm_bound = time.monotonic() + (last_breach - datetime.now(timezone.utc)).total_seconds()
        all_armed = await _wait("every deadline to be armed", armed, arm_bound, services)
        arm_seconds = time.monotonic() - relay_started
        armed_count = await _timers(js)
        arm_rate = armed_count / max(1e-3, time.monotonic() - first_armed[0]) if first_armed else 0.0
        print(f"  sla: {armed_count:,} deadlines armed in {arm_seconds:.1f} s", flush=True)
        await _wait("the sla_clock to be idle", lambda: _idle(js), time.monotonic() + RESTART_BOUND, services)
        arming_peak = max(peak_kib(clock.process.pid) for clock in clocks)

        # 3. restart: SIGKILL, then a new instance
        for clock in clocks:
            clock.process.send_signal(signal.SIGKILL)
            clock.process.wait(10)
        survived = await _timers(js)
        restarted_at = time.monotonic()
        clocks = [services.start("services.sla_clock") for _ in range(INSTANCES)]

        async def caught_up() -> bool:
            return all("keeping SLA time" in clock.output() for clock in clocks) and await _idle(js)

        restart_ok = await _wait("the restarted sla_clock to catch up", caught_up, restarted_at + RESTART_BOUND, services)
        restart_seconds = time.monotonic() - restarted_at
        margin = (first_alert - datetime.now(timezone.utc)).total_seconds()
        print(f"  sla: restart caught up in {restart_seconds:.1f} s; first warning due in {margin:.0f} s", flush=True)

        # 4. fire: wait for every warning and breach, reading them back as they come
        # (from the log's current end, unless something already fell due)
        alerts = Alerts(position=(store.recorder.max_notification_id() or 0) if margin > 0 else 0)
        last_print = time.monotonic()

        async def all_recorded() -> bool:
            nonlocal last_print
            await asyncio.to_thread(_read_alerts, store, alerts)
            if time.monotonic() - last_print > 15:
                last_print = time.monotonic()
                print(f"  sla: {alerts.count('warning'):,} warnings, {alerts.count('breach'):,} breaches recorded", flush=True)
            return alerts.count("breach") >= opened and alerts.count("warning") >= opened

        fire_bound = time.monotonic() + (last_breach - datetime.now(timezone.utc)).total_seconds() + GRACE
        await asyncio.sleep(max(0.0, margin))
        cpu = [(time.monotonic(), sum(cpu_seconds(clock.process.pid) for clock in clocks))]

        async def recorded_and_sampled() -> bool:
            cpu.append((time.monotonic(), sum(cpu_seconds(clock.process.pid) for clock in clocks)))
            return await all_recorded()

        await _wait("every warning and breach", recorded_and_sampled, fire_bound, services)
        cpu_mean, cpu_busiest = cpu_shares(cpu)
        await asyncio.sleep(2)  # a duplicate would come within a settle
        await asyncio.to_thread(_read_alerts, store, alerts)
        firing_peak = max(peak_kib(clock.process.pid) for clock in clocks)
        nats_peak = peak_kib(nats_server.pid)
        try:
            server_late = await asyncio.wait_for(_schedule_lateness(js, alerts), 60)
        except TimeoutError:
            server_late = []
    except BaseException:
        for service in services.started:
            print(f"== {service.log.name}\n{service.output()[-3000:]}", file=sys.stderr)
        raise
    finally:
        if client is not None:
            await client.close()
        services.stop()
        nats_server.terminate()
        try:
            nats_server.wait(10)
        except subprocess.TimeoutExpired:
            nats_server.kill()
        if store is not None:
            store.close()
        _drop_schema(postgres_url, schema)
    elapsed = (datetime.now(timezone.utc) - began).total_seconds()
    print(f"  sla: done in {elapsed:.0f} s", flush=True)

    breaches, warnings = alerts.lateness["breach"], alerts.lateness["warning"]
    p99 = percentile(breaches + [float("inf")] * max(0, opened - alerts.count("breach")), .99)
    verdict = "target p99 ≤ 1 s met" if breaches and p99 <= 1 else "target p99 ≤ 1 s NOT met"
    short = "" if opened == tickets else (
        f" of {tickets:,} asked (loading stops after {timing.load:.0f} s"
        + (f" to fit BENCH_SLA_BUDGET={BUDGET:.0f} s)" if timing.capped else ")"))
    ready = (f"first warning due {margin:.0f} s later" if margin >= 0 else
             f"NOT caught up until {-margin:.0f} s after the first warning fell due: lateness includes catch-up")
    due_rate, recorded_rate = busiest(alerts.due_at), busiest(alerts.recorded_at)
    return [
        ("SLA: open tickets with armed deadlines",
         f"{opened:,}{short}, opened in {load_seconds:.0f} s ({opened / load_seconds:,.0f}/s, "
         f"{LOADERS}×{LOADER_THREADS} loader processes×threads); breaches due over "
         f"{(last_breach - schedule.first_breach).total_seconds():.0f} s, "
         f"warnings {min(lead.values()):.0f}–{max(lead.values()):.0f} s before", "—", "—"),
        (f"SLA: all deadlines armed (relay + {INSTANCES} sla_clock process{'es' if INSTANCES > 1 else ''} started on the backlog)",
         f"{armed_count:,} schedules {arm_seconds:.1f} s after the start ({arm_rate:,.0f} tickets/s once running)"
         + ("" if all_armed else f"; gave up, {opened - armed_count:,} never armed"),
         f"relay published the backlog in {relayed_at[0]:.1f} s" if relayed_at else "relay never caught up", "—"),
        ("SLA: restart → all deadlines armed again",
         f"{restart_seconds:.1f} s from restart to consumers idle" + ("" if restart_ok else " (gave up)")
         + f"; the {survived:,} schedules stayed in JetStream through the SIGKILL, none re-armed; {ready}", "—", "—"),
        ("SLA breach lateness (recorded − due)",
         f"{_spread_of(breaches, max(0, opened - alerts.count('breach')), GRACE)}; {alerts.count('breach'):,}/{opened:,} recorded, "
         f"{alerts.duplicates('breach')} duplicates; {verdict}",
         f"NATS schedule firing: {_spread_of(server_late)} late", "—"),
        ("SLA warning lateness (recorded − due)",
         f"{_spread_of(warnings)}; {alerts.count('warning'):,}/{opened:,} recorded, {alerts.duplicates('warning')} duplicates"
         + ("" if alerts.count("warning") >= opened else " (a warning is skipped, by design, when its breach is due too)"),
         "—", "—"),
        ("SLA: alerts recorded per second (busiest 10 s)",
         f"{recorded_rate:,.0f}/s (each also settles the ticket's escalation or next deadline); "
         f"sla_clock CPU ({INSTANCES} together) {cpu_busiest:.0%} of a core in the busiest 10 s ({cpu_mean:.0%} on average)",
         f"{due_rate:,.0f}/s falling due (busiest 10 s)", ratio(recorded_rate, due_rate)),
        ("peak memory: sla_clock (SLA bench, the largest process)",
         f"{arming_peak / 1024:,.0f} MiB arming, {firing_peak / 1024:,.0f} MiB restarted and firing", "—", "—"),
        (f"peak memory: nats-server (SLA bench, {armed_count:,} schedules)", f"{nats_peak / 1024:,.0f} MiB", "—", "—"),
    ]


async def _main() -> None:
    import tempfile

    postgres = os.environ.get("TICKETING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with tempfile.TemporaryDirectory() as work:
        rows = await sla_lateness(Path(work), postgres, SLA_TICKETS)
    print("\n" + "\n".join(f"| {' | '.join(row)} |" for row in rows))


if __name__ == "__main__":
    asyncio.run(_main())
