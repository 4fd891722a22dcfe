"""Wiring in one place: settings → store → desk → read models → API."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI

from services.intake.app import create_app
from shared.clock import Clock, SystemClock
from shared.desk import TicketDesk
from shared.projections.ticket_list import TicketListProjection
from shared.read_db import read_engine
from shared.settings import Settings
from shared.store import open_store


@dataclass
class Intake:
    desk: TicketDesk
    ticket_list: TicketListProjection
    app: FastAPI = field(init=False)

    def close(self) -> None:
        self.desk.store.close()
        self.ticket_list.engine.dispose()


def intake(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ready: Callable[[], dict[str, bool]] = lambda: {},
) -> Intake:
    database_url = settings.resolved_database_url()
    store = open_store(database_url)
    parts = Intake(
        desk=TicketDesk(store, clock or SystemClock(), settings.time_zone),
        ticket_list=TicketListProjection(store, read_engine(database_url)),
    )
    parts.app = create_app(parts.desk, parts.ticket_list, ready=ready)
    return parts
