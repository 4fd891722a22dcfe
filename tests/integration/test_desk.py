"""The ticket desk against real stores (SQLite and PostgreSQL): numbering,
idempotent opening, commands and their conflicts."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.clock import FakeClock
from shared.desk import IdempotencyToken, TicketDesk
from shared.domain.errors import IdempotencyKeyReused, IllegalTransition, TicketNotFound, VersionConflict
from shared.domain.ticket import Status
from shared.store import EventStore, open_store

CLIENT = {"kind": "client", "id": "zabbix"}
ENGINEER = {"kind": "engineer", "id": "E-001"}


def details(**overrides: object) -> dict:
    base = {
        "severity": "P1", "category": "fault", "channel": "monitoring", "customer": "C-汉中电力",
        "contract": "K-1", "site": {"city": "汉中", "region": "陕南"}, "device": {"model": "S5700", "serial": "SN1"},
        "summary": "核心交换机宕机", "description": "all ports down", "contact": {"name": "王工"},
        "source": {"system": "zabbix", "reference": "evt-1"},
    }
    return base | overrides


@pytest.fixture
def desk(store: EventStore, clock: FakeClock) -> TicketDesk:
    return TicketDesk(store, clock)


def test_numbers_are_dense_and_per_local_year(desk: TicketDesk, clock: FakeClock) -> None:
    numbers = [desk.open(details=details(), token=None, actor=CLIENT, correlation_id="c").ticket.number for _ in range(3)]
    assert numbers == ["T-2026-000001", "T-2026-000002", "T-2026-000003"]
    clock.set(clock.now().replace(month=12, day=31, hour=16, minute=30))  # 00:30 on 1 January in Shanghai
    assert desk.open(details=details(), token=None, actor=CLIENT, correlation_id="c").ticket.number == "T-2027-000001"
    assert desk.get("T-2026-000002").number == "T-2026-000002"


def test_a_second_desk_continues_the_numbering(desk: TicketDesk, database_url: str, clock: FakeClock) -> None:
    desk.open(details=details(), token=None, actor=CLIENT, correlation_id="c")
    other_store = open_store(database_url)
    other = TicketDesk(other_store, clock)
    assert other.open(details=details(), token=None, actor=CLIENT, correlation_id="c").ticket.number == "T-2026-000002"
    # The first desk still believes 1 was the last; it must skip the number the other took.
    assert desk.open(details=details(), token=None, actor=CLIENT, correlation_id="c").ticket.number == "T-2026-000003"
    other_store.close()


def test_idempotent_open_returns_the_first_ticket(desk: TicketDesk) -> None:
    token = IdempotencyToken(scope="zabbix", value="key-1", field="Idempotency-Key")
    first = desk.open(details=details(), token=token, actor=CLIENT, correlation_id="c")
    desk.act(first.ticket.id, "acknowledge", expected_version=None, actor=ENGINEER, correlation_id="c", plan="p")
    again = desk.open(details=details(), token=token, actor=CLIENT, correlation_id="c")
    assert (again.replayed, again.ticket.id, again.ticket.version) == (True, first.ticket.id, 1)
    with pytest.raises(IdempotencyKeyReused):
        desk.open(details=details(summary="other"), token=token, actor=CLIENT, correlation_id="c")


def test_concurrent_identical_opens_make_one_ticket(desk: TicketDesk, store: EventStore) -> None:
    token = IdempotencyToken(scope="zabbix", value="storm", field="Idempotency-Key")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: desk.open(details=details(), token=token, actor=CLIENT, correlation_id="c"), range(20)))
    assert len({r.ticket.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert store.recorder.max_notification_id() == 2  # one Opened, one number issued


def test_a_storm_of_opens_gets_dense_distinct_numbers(desk: TicketDesk, store: EventStore) -> None:
    """Opens arriving together are saved together; numbering stays dense, and a retry
    with the same key, or the same key reused for another report, gets its own answer."""
    token = IdempotencyToken(scope="zabbix", value="storm", field="Idempotency-Key")

    def report(n: int) -> object:
        try:
            if n % 4 == 0:
                return desk.open(details=details(), token=token, actor=CLIENT, correlation_id="c")
            if n % 4 == 1:
                return desk.open(details=details(summary="another body"), token=token, actor=CLIENT, correlation_id="c")
            return desk.open(details=details(summary=f"outage {n}"), token=None, actor=CLIENT, correlation_id="c")
        except IdempotencyKeyReused as refused:
            return refused

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(report, range(80)))
    opened = [r for r in results if not isinstance(r, IdempotencyKeyReused)]
    keyed = {r.ticket.id for n, r in enumerate(results) if n % 4 < 2 and not isinstance(r, IdempotencyKeyReused)}
    assert len(keyed) == 1  # one ticket for the key, whichever body came first
    first = [r for r in opened if not r.replayed]
    assert sorted(r.ticket.number for r in first) == [f"T-2026-{n:06d}" for n in range(1, 42)]
    assert all(desk.get(r.ticket.number).id == r.ticket.id for r in first)
    # The losers of the key: replays when their body was the winner's, refusals when not.
    assert all(r.replayed for r in opened if r.ticket.id in keyed and r not in first)
    assert 19 <= sum(isinstance(r, IdempotencyKeyReused) for r in results) <= 20
    # Each ticket's Opened and its number, nothing more (PostgreSQL may skip positions
    # after a conflict, so count the events).
    assert len(store.recorder.select_notifications(1, 1000)) == 2 * 41


def test_commands_record_events_and_refuse_illegal_ones(desk: TicketDesk, clock: FakeClock) -> None:
    ticket = desk.open(details=details(), token=None, actor=CLIENT, correlation_id="c").ticket
    clock.advance(minutes=10)
    desk.act(ticket.number, "acknowledge", expected_version=1, actor=ENGINEER, correlation_id="c2", plan="remote diagnosis")
    with pytest.raises(VersionConflict):
        desk.act(ticket.number, "resolve", expected_version=1, actor=ENGINEER, correlation_id="c", resolution="r", cause="c")
    with pytest.raises(IllegalTransition):
        desk.act(ticket.number, "confirm", expected_version=None, actor=CLIENT, correlation_id="c", satisfaction=5, comment="")
    history = desk.history(ticket.number)
    assert [type(e).__name__ for e in history] == ["Opened", "Acknowledged"]
    assert history[1].actor == ENGINEER and history[1].correlation_id == "c2"
    assert history[1].timestamp == clock.now()
    assert desk.get(ticket.id).status is Status.ACKNOWLEDGED


def test_unknown_references_are_not_found(desk: TicketDesk) -> None:
    for reference in ("T-2026-000099", "nonsense", "7c1e5a8e-0000-4000-8000-000000000000"):
        with pytest.raises(TicketNotFound):
            desk.get(reference)
