"""Dispatch wiring in one place: settings → store → rules → roster and stock (loaded
from their files) → the dispatcher and the engineers' actions → the API."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI

from services.dispatch.app import create_app
from services.intake.access import Gate
from shared.clock import Clock, SystemClock
from shared.desk import TicketDesk
from shared.dispatch_actions import EngineerActions
from shared.dispatch_config import load_rules
from shared.dispatch_desk import Dispatcher
from shared.dispatch_roster import EngineerRoster, SpareStock
from shared.dispatch_spares import SpareLogistics
from shared.dispatch_store import ReadModels
from shared.dispatching import DispatchRules
from shared.read_db import read_engine
from shared.settings import Settings
from shared.sla.policy import load_policy
from shared.store import open_store

FILE_ACTOR = {"kind": "service", "id": "dispatch-files"}
# Engineers and spare units, read at every decision: more than a large service
# organisation has of both (the tickets it reads are read in bulk, past the cache).
CACHED_AGGREGATES = 20_000



class StartedClock:
    """A clock that starts at a given instant and runs at real speed: a demo or an
    end-to-end test can live through 02:00 on a Tuesday whenever it runs."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("clock_start needs a UTC offset, e.g. 2026-11-24T02:00:00+08:00")
        self._start = start.astimezone(timezone.utc)
        self._began = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._began)


def clock_for(settings: Settings) -> Clock:
    return StartedClock(datetime.fromisoformat(settings.clock_start)) if settings.clock_start else SystemClock()


@dataclass
class Dispatch:
    rules: DispatchRules
    tickets: TicketDesk
    reads: ReadModels
    roster: EngineerRoster
    stock: SpareStock
    spares: SpareLogistics
    actions: EngineerActions
    dispatcher: Dispatcher
    gate: Gate
    app: FastAPI = field(init=False)

    def close(self) -> None:
        self.tickets.store.close()
        self.reads.engineers.engine.dispose()  # the unit list shares this engine


def dispatch(settings: Settings, *, clock: Clock | None = None) -> Dispatch:
    """Everything dispatch needs, with the engineers and spare units files loaded (a
    file loaded again unchanged records nothing)."""
    database_url = settings.resolved_database_url()
    clock = clock or clock_for(settings)
    store = open_store(database_url, cached=CACHED_AGGREGATES)
    rules = load_rules(settings.engineers_file, settings.spare_units_file, load_policy(settings.policy_file))
    tickets = TicketDesk(store, clock, settings.time_zone)
    reads = ReadModels(store, read_engine(database_url))
    roster = EngineerRoster(store, clock, rules)
    stock = SpareStock(store, clock, rules)
    roster.load_file(settings.engineers_file, actor=FILE_ACTOR)
    stock.load_file(settings.spare_units_file, actor=FILE_ACTOR)
    spares = SpareLogistics(store, clock, rules, reads, stock, tickets)
    parts = Dispatch(
        rules=rules, tickets=tickets, reads=reads, roster=roster, stock=stock, spares=spares,
        actions=EngineerActions(store, clock, roster, tickets),
        dispatcher=Dispatcher(store, clock, rules, reads, roster, spares),
        gate=Gate.configure(settings, store, clock),
    )
    parts.app = create_app(parts, max_body_bytes=settings.max_body_bytes, opentelemetry=settings.opentelemetry)
    return parts
