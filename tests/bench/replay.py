"""`make bench`, the replay section (issue 5): a store of BENCH_REPLAY_EVENTS events
(default 1,000,000: tickets of ten events each, worked the way the desk works them),
then, in the same run,

- the raw notification-log read rate (no decoding): the baseline,
- a full rebuild of the ticket list read model, in events/s (the ratio is the figure),
- `GET /v1/tickets/{id}?as_of=` for a ticket with 500 events,
- `ticketctl export` throughput (CloudEvents JSON lines).

The store is filled by LOADERS threads saving whole tickets (ten events in one save),
which is as fast as the store takes them; nothing here waits on a clock.
"""
from __future__ import annotations

import io
import os
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone
from uuid import uuid4

from fastapi.testclient import TestClient

from shared.bootstrap import intake
from shared.clock import FakeClock
from shared.domain.ticket import Ticket
from shared.projections.rebuild import rebuild
from shared.projections.ticket_list import TicketListProjection
from shared.settings import ROOT, Settings
from shared.transfer import export
from tests.bench import baselines
from tests.keys import bearer

EVENTS = int(os.environ.get("BENCH_REPLAY_EVENTS", "1000000"))
LOADERS = 4
LONG_TICKET = 500  # events on the ticket whose past states are asked for
WHO = {"actor": {"kind": "agent", "id": "bench"}, "correlation_id": "bench"}
DETAILS = {"severity": "P2", "category": "fault", "channel": "api", "customer": "C-汉中电力", "contract": "K-2026-017",
           "site": {"city": "汉中"}, "device": {}, "summary": "replay", "description": "", "contact": {}, "source": {}}
Row = tuple[str, str, str, str]


def worked_ticket(parts, at: datetime, comments: int) -> Ticket:  # type: ignore[no-untyped-def]
    """Opened (with its SLA commitment), acknowledged, commented on, resolved: 4 + `comments` events."""
    ticket = Ticket.open(id=uuid4(), at=at, number=f"T-R-{uuid4().hex[:12]}", request_digest="bench", **DETAILS, **WHO)
    parts.desk.commitments.on_open(ticket, at=at, correlation_id="bench")
    step = timedelta(seconds=30)
    ticket.acknowledge(plan="remote diagnosis", at=at + step, **WHO)
    for i in range(comments):
        ticket.comment(text=f"progress {i}", public=False, at=at + step * (2 + i), **WHO)
    ticket.resolve(resolution="card replaced", cause="hardware", at=at + step * (2 + comments), **WHO)
    return ticket


def fill(parts, events: int) -> float:  # type: ignore[no-untyped-def]
    """Save tickets of ten events from LOADERS threads until `events` are stored; returns seconds taken."""
    start = datetime(2026, 11, 2, 1, 0, tzinfo=timezone.utc)
    per_thread = events // 10 // LOADERS

    def load(offset: int) -> None:
        for i in range(per_thread):
            parts.desk.store.save(worked_ticket(parts, start + timedelta(seconds=offset * per_thread + i), comments=6))

    began = time.perf_counter()
    threads = [threading.Thread(target=load, args=(n,)) for n in range(LOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def replay(database_url: str) -> list[Row]:
    clock = FakeClock(datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc))
    parts = intake(Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml", rate_limit=0),
                   clock=clock)
    try:
        print(f"replay: filling the store with {EVENTS:,} events ...", flush=True)
        filled = fill(parts, EVENTS)
        long = worked_ticket(parts, clock.now() - timedelta(days=1), comments=LONG_TICKET - 4)
        parts.desk.store.save(long)
        stored = parts.desk.store.recorder.max_notification_id()
        print("replay: raw read, rebuild, as_of, export ...", flush=True)
        read_rate, read = baselines.notification_read_rate(database_url)
        projection = TicketListProjection(parts.desk.store, parts.ticket_list.engine)
        began = time.perf_counter()
        rebuilt = rebuild(projection)
        rebuild_rate = rebuilt / (time.perf_counter() - began)
        api = TestClient(parts.app, headers=bearer(parts.gate.keyring, "auditor"))
        instants = [long.created_on + timedelta(seconds=30 * n + 1) for n in range(0, LONG_TICKET, 25)]
        answers = []
        for instant in instants:
            began = time.perf_counter()
            assert api.get(f"/v1/tickets/{long.id}", params={"as_of": instant.isoformat()}).status_code == 200
            answers.append(time.perf_counter() - began)
        began = time.perf_counter()
        exported = export(parts.desk.store, io.StringIO())
        export_rate = exported / (time.perf_counter() - began)
    finally:
        parts.close()
    return [
        ("replay: store filled", f"{stored:,} events in {filled:.0f} s ({stored / filled:,.0f} events/s, {LOADERS} threads, "
         "10-event tickets)", "—", "—"),
        ("replay: full rebuild of the ticket list", f"{rebuild_rate:,.0f} events/s ({rebuilt:,} events)",
         f"{read_rate:,.0f}/s raw notification read ({read:,})", f"{rebuild_rate / read_rate:.0%}"),
        (f"replay: as_of on a ticket with {LONG_TICKET} events (HTTP, in process)",
         f"median {statistics.median(answers) * 1000:.0f} ms, max {max(answers) * 1000:.0f} ms", "—", "—"),
        ("replay: export (CloudEvents JSON lines)", f"{export_rate:,.0f} events/s ({exported:,})",
         f"{read_rate:,.0f}/s raw notification read", f"{export_rate / read_rate:.0%}"),
    ]
