"""Read models: the SLA compliance report of a worked month (in Python and over the
API), and every projection rebuilt from the event store equal to the same projection
kept live."""
from __future__ import annotations

import gc
import importlib
import pkgutil
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from eventsourcing.utils import get_topic
from fastapi import FastAPI
from sqlalchemy import event, select, text

import shared.projections
from services.dispatch.wiring import Dispatch
from services.intake.reports import reports_router
from shared.bootstrap import Intake
from shared.clock import FakeClock
from shared.desk import TicketDesk
from shared.domain.api_key import Role
from shared.domain.ticket import Severity, Ticket
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.contract_list import ContractListProjection
from shared.projections.engineer_list import EngineerListProjection
from shared.projections.following import catch_up_together
from shared.projections.key_list import KeyListProjection
from shared.projections.rebuild import RebuildFailed, catch_up_all, rebuild
from shared.projections.tracking import positions, read_position
from shared.projections.sla_compliance import SlaComplianceProjection
from shared.projections.spare_unit_list import SpareUnitListProjection
from shared.projections.ticket_list import TicketFilter, TicketListProjection
from shared.projections.webhook_subscriptions import WebhookSubscriptionsProjection
from shared.read_db import read_engine
from shared.settings import ROOT, Settings
from shared.store import open_store
from tests.integration.test_dispatch_api import Reactions
from tests.keys import bearer

CLIENT = {"kind": "client", "id": "hotline"}
ENGINEER = {"kind": "engineer", "id": "E-017"}
ADMIN = {"kind": "admin", "id": "ops"}
SLA_CLOCK = {"kind": "service", "id": "sla_clock"}
# A P1 fault on K-2026-017 (premium, 7×24, under warranty): response 30 min, on site 2 h, resolution 48 h.
FAULT = {
    "severity": "P1", "category": "fault", "channel": "hotline", "customer": "C-汉中电力", "contract": "K-2026-017",
    "site": {"city": "汉中"}, "device": {"model": "S5700"}, "summary": "核心交换机宕机", "description": "",
    "contact": {}, "source": {},
}


@pytest.fixture
def settings(database_url: str) -> Settings:
    """For conftest's `service` and `dispatching`. Webhooks to loopback only, and no
    notifier runs: nothing is ever sent."""
    return Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml",
                    webhook_allowed_hosts="127.0.0.1")



def worked_tickets(service: Intake, clock: FakeClock) -> dict[str, Ticket]:
    """A month of one customer's tickets, from 2026-11-20 17:00 Shanghai: one that met
    every target (with a severity change and a pause), one whose response breach the
    SLA clock service recorded, one acknowledged late with no breach recorded, one
    cancelled; plus another customer's ticket and one received on 1 December, local
    time (still 30 November in UTC)."""
    desk = service.desk

    def open_ticket(**changes: Any) -> Ticket:
        return desk.open(details=FAULT | changes, token=None, actor=CLIENT, correlation_id="c-open").ticket

    def act(ticket: Ticket, command: str, actor: dict[str, str] = ENGINEER, **arguments: Any) -> None:
        desk.act(ticket.id, command, expected_version=None, actor=actor, correlation_id="c-act", **arguments)

    met = open_ticket(severity="P2")
    clock.advance(minutes=18)
    act(met, "acknowledge", plan="远程诊断")
    clock.advance(minutes=12)
    act(met, "change_severity", severity=Severity.P1, reason="全厂停产")
    clock.advance(minutes=30)
    act(met, "await_customer", reason="等待机房钥匙")
    clock.advance(hours=2)
    act(met, "record_customer_response", message="钥匙已到")
    clock.advance(minutes=10)
    act(met, "arrive", engineer="E-017", note="")
    clock.advance(hours=1)
    act(met, "resolve", resolution="更换电源模块", cause="电源故障")

    breached = open_ticket()
    clock.advance(minutes=30)
    act(breached, "record_sla_alert", actor=SLA_CLOCK, kind="breach", target="response", cycle=1, due_at=clock.now())
    clock.advance(minutes=10)
    act(breached, "acknowledge", plan="远程诊断")

    late = open_ticket()
    clock.advance(minutes=45)
    act(late, "acknowledge", plan="远程诊断")  # 15 minutes past due: breached, though nobody recorded it

    cancelled = open_ticket()
    clock.advance(minutes=10)
    act(cancelled, "acknowledge", plan="远程诊断")
    clock.advance(minutes=5)
    act(cancelled, "cancel", reason="误报")

    other = open_ticket(customer="西安公交集团", contract="K-XA-2026-008")
    clock.set(datetime(2026, 11, 30, 16, 30, tzinfo=timezone.utc))
    december = open_ticket()
    tickets = {"met": met, "breached": breached, "late": late, "cancelled": cancelled, "other": other, "december": december}
    return {name: desk.get(ticket.id) for name, ticket in tickets.items()}


def caught_up(projection: AggregateRows, batch: int = 500) -> AggregateRows:
    while projection.catch_up(batch):
        pass
    return projection


def rows(projection: AggregateRows) -> list[dict[str, Any]]:
    with projection.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(projection.table).order_by(projection.table.c[projection.key])).mappings()]


def compliance(service: Intake) -> SlaComplianceProjection:
    return SlaComplianceProjection(service.desk.store, service.ticket_list.engine, service.policy)


def test_sla_compliance_per_customer_and_month(service: Intake, clock: FakeClock) -> None:
    tickets = worked_tickets(service, clock)
    projection = caught_up(compliance(service))
    report = projection.report("C-汉中电力", "2026-11")
    assert (report["tickets"], report["committed"], report["time_zone"]) == (4, 4, "Asia/Shanghai")
    targets = {t["target"]: t for t in report["targets"]}
    outcomes = {name: tuple(t[k] for k in ("met", "breached", "open", "stopped", "compliance")) for name, t in targets.items()}
    assert outcomes == {
        "response": (2, 2, 0, 0, 0.5),
        "on_site": (1, 0, 2, 1, 1.0),
        "resolution": (1, 0, 2, 1, 1.0),
        "callback": (0, 0, 1, 0, None),  # only the resolved ticket owes a callback, not yet made
    }
    assert targets["response"]["breached_tickets"] == sorted([tickets["breached"].number, tickets["late"].number])
    december = projection.report("C-汉中电力", "2026-12")
    assert december["tickets"] == 1 and december["targets"][0]["open"] == 1
    assert projection.report("西安公交集团", "2026-11")["tickets"] == 1
    assert projection.report("C-汉中电力", "2026-10")["tickets"] == 0


async def test_the_report_over_the_api(service: Intake, clock: FakeClock) -> None:
    worked_tickets(service, clock)
    app = FastAPI()
    app.include_router(reports_router(caught_up(compliance(service)), service.gate))
    admin = bearer(service.gate.keyring, "admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake", headers=admin) as api:
        answer = await api.get("/v1/reports/sla", params={"customer": "C-汉中电力", "month": "2026-11"})
        assert answer.status_code == 200
        assert answer.json() == compliance(service).report("C-汉中电力", "2026-11")
        assert (await api.get("/v1/reports/sla", params={"customer": "C-汉中电力", "month": "2026-13"})).status_code == 422


def worked_fleet(service: Intake, parts: Dispatch) -> None:
    """After `worked_tickets`, what the other read models follow: engineers assigned to
    new faults (one of them resolved, freeing its engineer) and one engineer amended; a
    spare unit reserved, shipped, installed and returned; keys issued and one revoked;
    webhook subscriptions amended, rotated, paused and deleted."""
    desk, reactions = service.desk, Reactions(parts)
    faults = [desk.open(details=FAULT | {"device": {"model": "S5700-28C-EI"}}, token=None, actor=CLIENT,
                        correlation_id=f"c-fleet-{n}").ticket for n in range(3)]
    reactions.run()
    lead = parts.tickets.get(faults[0].id).lead_engineer
    unit = parts.spares.request(faults[0].number, engineer=lead, model=None, reason="主控板故障", actor=ADMIN,
                                correlation_id="c-spare").unit
    parts.spares.ship(unit, reference="同城专送", actor=ADMIN, correlation_id="c-ship")
    parts.spares.install(unit, return_by=None, actor=ADMIN, correlation_id="c-install")
    parts.spares.return_to_stock(unit, note="客户设备修复", actor=ADMIN, correlation_id="c-return")
    for command, arguments in (("acknowledge", {"plan": "远程诊断"}), ("resolve", {"resolution": "重启恢复", "cause": ""})):
        desk.act(faults[1].id, command, expected_version=None, actor=ADMIN, correlation_id="c-resolve", **arguments)
    reactions.run()
    parts.roster.put("E-017", {"name": "林涛", "branch": "汉中", "level": "L3", "skills": ["network"],
                               "hours": "cn-business", "max_tickets": 4}, actor=ADMIN, correlation_id="c-roster")

    keyring = service.gate.keyring
    keyring.issue(name="zabbix", role=Role.INTEGRATION, customers=("C-汉中电力",), actor=ADMIN, correlation_id="c-key")
    leaked, _ = keyring.issue(name="old-crm", role=Role.AUDITOR, actor=ADMIN, correlation_id="c-key")
    keyring.revoke(leaked.id, reason="leaked", actor=ADMIN, correlation_id="c-revoke")

    webhooks = service.webhooks
    made = [webhooks.subscribe({"url": f"http://127.0.0.1:9/hooks/{n}", "event_types": ["ticket.*"]}, actor=ADMIN,
                               correlation_id="c-hook")[0] for n in range(3)]
    webhooks.change(made[0].id, {"filters": {"regions": ["陕南"]}}, expected_version=None, actor=ADMIN,
                    correlation_id="c-hook")
    webhooks.rotate_secret(made[0].id, overlap=None, actor=ADMIN, correlation_id="c-hook")
    webhooks.pause(made[1].id, actor=ADMIN, correlation_id="c-hook")
    webhooks.delete(made[2].id, actor=ADMIN, correlation_id="c-hook")


def kept_from_the_store(service: Intake) -> dict[str, AggregateRows]:
    """Every read model made from the event store, as new instances (nothing carried over
    from keeping it live). The webhook delivery log is not among them: the notifier
    writes it as it works, it is not derived from events."""
    store, engine = service.desk.store, service.ticket_list.engine
    made = [
        TicketListProjection(store, engine), ContractListProjection(store, engine), compliance(service),
        KeyListProjection(store, engine), EngineerListProjection(store, engine), SpareUnitListProjection(store, engine),
        WebhookSubscriptionsProjection(store, engine),
    ]
    return {projection.name: projection for projection in made}


def every_projection_class() -> set[type[AggregateRows]]:
    for module in pkgutil.iter_modules(shared.projections.__path__):
        importlib.import_module(f"{shared.projections.__name__}.{module.name}")
    return set(AggregateRows.__subclasses__())


def test_a_rebuilt_projection_equals_the_live_one(service: Intake, dispatching: Dispatch, clock: FakeClock) -> None:
    worked_tickets(service, clock)
    worked_fleet(service, dispatching)
    # Live: the instances the services keep, dispatch's caught up before each decision,
    # the rest now 3 notifications at a time, so most batches start mid-stream.
    live = (service.ticket_list, service.contract_list, service.sla_compliance, service.key_list,
            dispatching.reads.engineers, dispatching.reads.units, service.webhooks.subscriptions)
    before = {projection.name: rows(caught_up(projection, batch=3)) for projection in live}
    assert all(before.values())
    assert any(row["tickets"] for row in before["engineer_list"])
    assert any(row["version"] > 1 for row in before["engineer_list"])
    assert "returned" in {row["state"] for row in before["spare_unit_list"]}
    assert any(row["revoked_at"] for row in before["key_list"])
    assert {row["status"] for row in before["webhook_subscriptions"]} == {"active", "paused", "deleted"}

    rebuilt = kept_from_the_store(service)
    assert {type(projection) for projection in rebuilt.values()} == every_projection_class()
    assert rebuilt.keys() == before.keys()
    thresholds = gc.get_threshold()
    for name, projection in rebuilt.items():
        assert rebuild(projection, batch=2) > 0  # many batches, each read while the one before is applied
        assert rows(projection) == before[name], name
    # A replay collects garbage less often while it runs, and leaves the process as it was.
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, 0)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # a share of the log is read on PostgreSQL
def test_a_rebuild_shared_out_between_processes_equals_the_live_one(
        service: Intake, dispatching: Dispatch, clock: FakeClock) -> None:
    """Three forked processes each replay a share of the streams, a batch of 2 at a
    time, up to where the log ended; then the projection's own position stands there and
    theirs are gone."""
    worked_tickets(service, clock)
    worked_fleet(service, dispatching)
    live = (service.ticket_list, service.contract_list, service.sla_compliance, service.key_list,
            dispatching.reads.engineers, dispatching.reads.units, service.webhooks.subscriptions)
    before = {projection.name: rows(caught_up(projection)) for projection in live}
    latest = service.desk.store.recorder.max_notification_id()

    for name, projection in kept_from_the_store(service).items():
        whole = rebuild(projection, batch=2, shares=1)
        assert rebuild(projection, batch=2, shares=3) == whole > 0, name  # every event applied once
        assert rows(projection) == before[name], name
        with projection.engine.connect() as conn:
            kept = dict(conn.execute(select(positions.c.name, positions.c.position)
                                     .where(positions.c.name.startswith(name))).all())
        assert kept == {name: latest}, name


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_shared_rebuild_whose_process_fails_says_which_and_why_and_leaves_the_position_at_the_start(
        service: Intake, clock: FakeClock) -> None:
    worked_tickets(service, clock)
    store, engine = service.desk.store, service.ticket_list.engine
    expected = rows(caught_up(TicketListProjection(store, engine)))
    failing = TicketListProjection(store, engine)
    kept_row = failing.row

    def row_of_share_0_fails(ticket: Ticket) -> dict[str, Any]:
        if ticket.id.bytes[15] % 2 == 0:
            raise RuntimeError(f"no row for {ticket.number}")
        return kept_row(ticket)

    assert {ticket.id.bytes[15] % 2 for ticket in _tickets(store)} == {0, 1}  # both shares hold tickets
    failing.row = row_of_share_0_fails  # type: ignore[method-assign]  # the forked children have it too
    with pytest.raises(RebuildFailed, match=r"(?s)ticket_list 0of2: Traceback.*RuntimeError: no row for T-"):
        rebuild(failing, shares=2)
    with engine.connect() as conn:
        assert read_position(conn, failing.name) == 0  # the projector would replay everything again

    again = TicketListProjection(store, engine)
    rebuild(again, shares=2)
    assert rows(again) == expected


def _tickets(store: Any) -> list[Ticket]:
    notifications = store.recorder.select_notifications(0, 10_000, topics=[get_topic(Ticket.Opened)])
    return [store.repository.get(n.originator_id) for n in notifications]


def test_a_replay_that_fails_mid_way_carries_on_from_its_last_commit(service: Intake, clock: FakeClock) -> None:
    """A replay reads each batch while the one before is applied: a batch that fails
    leaves the batch read ahead of it unused, and the next catch-up starts again from
    what was committed."""
    worked_tickets(service, clock)
    store, engine = service.desk.store, service.ticket_list.engine
    whole = TicketListProjection(store, engine)
    events = rebuild(whole, batch=2)
    expected = rows(whole)
    upserts = []

    def third_upsert_fails(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO ticket_list"):
            upserts.append(statement)
            if len(upserts) == 3:
                raise RuntimeError("the database went away")

    interrupted = TicketListProjection(store, engine)
    event.listen(engine, "before_cursor_execute", third_upsert_fails)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            rebuild(interrupted, batch=2)
    finally:
        event.remove(engine, "before_cursor_execute", third_upsert_fails)
    with engine.connect() as conn:
        assert read_position(conn, interrupted.name) > 0  # two batches stayed committed

    assert catch_up_all(interrupted, batch=2) == events - 2 * 2  # none skipped, none applied twice
    assert rows(interrupted) == expected


def test_a_rebuild_on_postgresql_first_brings_the_planners_statistics_up_to_date(postgres_url: str, clock: FakeClock) -> None:
    """Without statistics (after a bulk load, or with autovacuum off or behind), the
    planner takes each batch's stretch of the log for a few rows and sorts all the rest
    of the log for every batch instead of walking its index."""
    store, engine = open_store(postgres_url), read_engine(postgres_url)
    try:
        for _ in range(3):
            TicketDesk(store, clock).open(details=FAULT, token=None, actor=ADMIN, correlation_id="c")
        schema = store.recorder.datastore.schema

        def statistics() -> int:
            with engine.connect() as conn:
                return conn.scalar(text("SELECT count(*) FROM pg_stats WHERE schemaname = :schema AND tablename = :table"),
                                   {"schema": schema, "table": store.recorder.events_table_name})

        assert statistics() == 0  # too few rows for autovacuum to have looked
        assert rebuild(TicketListProjection(store, engine)) > 0
        assert statistics() > 0
    finally:
        store.close()
        engine.dispose()


def test_the_subscription_list_says_how_far_it_has_seen_past_other_streams(service: Intake) -> None:
    """The notifier matches an event only once its subscription list has seen the event's
    position. A look that finds only other streams' events says how far it got (so the
    notifier need not look again for them), and a subscription made after is still seen."""
    webhooks = service.webhooks
    webhooks.subscribe({"url": "http://127.0.0.1:9/hooks/a", "event_types": ["ticket.*"]}, actor=ADMIN, correlation_id="c")
    subscriptions = WebhookSubscriptionsProjection(service.desk.store, service.ticket_list.engine)
    subscribed = subscriptions.catch_up_fully()
    service.desk.open(details=FAULT, token=None, actor=ADMIN, correlation_id="c")  # other streams' events
    latest = service.desk.store.recorder.max_notification_id() or 0
    assert latest > subscribed
    committed = subscriptions.committed
    statements: list[str] = []
    event.listen(subscriptions.engine, "before_cursor_execute", lambda _c, _k, sql, *_: statements.append(sql))
    assert subscriptions.catch_up_fully() == latest
    assert (statements, subscriptions.committed) == ([], committed)  # one read of the store: no transaction on the rows

    # Made through the intake's own list, which writes the rows and their position.
    webhooks.subscribe({"url": "http://127.0.0.1:9/hooks/b", "event_types": ["ticket.*"]}, actor=ADMIN, correlation_id="c")
    assert subscriptions.catch_up_fully() == service.desk.store.recorder.max_notification_id()
    assert subscriptions.committed > committed  # what tells the notifier to load the list again
    assert sorted(s.spec.url for s in subscriptions.everything().values()) == [
        "http://127.0.0.1:9/hooks/a", "http://127.0.0.1:9/hooks/b"]


def test_the_projector_asks_nothing_of_a_read_model_that_has_seen_the_whole_log(service: Intake) -> None:
    """One pass of the projector reads where the log ends; a read model that has seen up
    to there runs no statement, and one that has not applies what is new, in batches."""
    store, engine = service.desk.store, service.ticket_list.engine
    projections = [TicketListProjection(store, engine), KeyListProjection(store, engine)]
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _k, sql, *_: statements.append(sql))
    while catch_up_together(store, projections):
        pass
    statements.clear()

    assert catch_up_together(store, projections) == 0
    assert statements == []

    opened = [service.desk.open(details=FAULT, token=None, actor=ADMIN, correlation_id="c").ticket for _ in range(3)]
    assert catch_up_together(store, projections) == 0  # fewer new events than a batch: all applied in one pass
    assert statements
    with engine.connect() as conn:
        numbers = conn.scalars(select(TicketListProjection.table.c.number).where(
            TicketListProjection.table.c.id.in_([str(t.id) for t in opened]))).all()
    assert sorted(numbers) == sorted(t.number for t in opened)
    statements.clear()
    assert catch_up_together(store, projections) == 0
    assert statements == []


def test_a_catch_up_to_the_log_end_stops_once_seen_without_another_look(service: Intake) -> None:
    """Dispatch catches its engineer list up to the log's end before every decision: the
    events up to there are applied, and nothing more is asked once they are."""
    store, engine = service.desk.store, service.ticket_list.engine
    tickets = TicketListProjection(store, engine)
    opened = service.desk.open(details=FAULT, token=None, actor=ADMIN, correlation_id="c").ticket
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _k, sql, *_: statements.append(sql))
    latest = store.recorder.max_notification_id() or 0
    tickets.catch_up_to(latest, batch=1)  # several batches
    assert tickets.seen_up_to == latest
    assert tickets.query(TicketFilter(ids=frozenset({str(opened.id)})))[1] == 1
    statements.clear()
    tickets.catch_up_to(latest)
    assert statements == []


def test_reads_run_outside_a_transaction_and_writes_inside_one(service: Intake) -> None:
    """A read is one round trip to the database, with no BEGIN before it and no ROLLBACK
    after; so is the look a catch-up takes when nothing is new (dispatch takes one before
    every decision). What a catch-up writes still commits in one transaction."""
    store, engine = service.desk.store, service.ticket_list.engine
    tickets = TicketListProjection(store, engine)
    service.desk.open(details=FAULT, token=None, actor=ADMIN, correlation_id="c")
    tickets.catch_up_to(store.recorder.max_notification_id() or 0)
    statements: list[tuple[str, bool]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, _k, sql, *_: statements.append((sql.split()[0], _autocommit(conn.connection.dbapi_connection))))

    assert tickets.catch_up() == 0
    assert tickets.query(TicketFilter())[1] == 1
    assert statements and all(alone for _, alone in statements)

    statements.clear()
    service.desk.open(details=FAULT, token=None, actor=ADMIN, correlation_id="c")
    assert tickets.catch_up() == 2  # the opening and its SLA commitment
    writes = [(verb, alone) for verb, alone in statements if verb != "SELECT"]
    assert writes and not any(alone for _, alone in writes)
    assert tickets.query(TicketFilter())[1] == 2


def _autocommit(dbapi_connection: Any) -> bool:
    # psycopg says so; Python 3.11's sqlite3 runs each statement alone when it has no isolation level.
    return bool(getattr(dbapi_connection, "autocommit", dbapi_connection.isolation_level is None))


def test_after_its_first_look_a_keeper_reads_no_position_and_two_keepers_agree(service: Intake) -> None:
    """A process reads the saved position once, then carries on from where it got to: a
    look reads the log only. A second process keeping the same rows (two dispatch
    instances) makes each apply some events the other applied: the rows and the saved
    position come out the same."""
    store, engine = service.desk.store, service.ticket_list.engine
    first, second = TicketListProjection(store, engine), TicketListProjection(store, engine)
    for keeper in (first, second):
        keeper.catch_up_to(store.recorder.max_notification_id() or 0)
    opened = service.desk.open(details=FAULT, token=None, actor=ADMIN, correlation_id="c").ticket
    latest = store.recorder.max_notification_id() or 0
    second.catch_up_to(latest)  # the other process gets there first
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _k, sql, *_: statements.append(sql))

    first.catch_up_to(latest)
    assert statements and not any("projection_positions.position" in sql for sql in statements if sql.startswith("SELECT"))
    assert first.seen_up_to == second.seen_up_to == latest
    rows, total = first.query(TicketFilter(ids=frozenset({str(opened.id)})))
    assert total == 1 and rows[0]["number"] == opened.number
    with engine.connect() as conn:
        assert read_position(conn, first.name) == latest
