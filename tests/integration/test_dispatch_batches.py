"""Dispatch decides many tickets at once (Dispatcher.react_many, as the worker does
with each fetch), on SQLite and PostgreSQL: a batch comes out as the same decisions
taken one after the other, in one transaction; a decision that fails, or a ticket
that does not exist, is answered apart and leaves nothing recorded of its own; two
tickets of one batch wanting the last spare unit never both get it."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest

from services.dispatch.wiring import Dispatch, dispatch
from shared import dispatch_desk
from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.dispatch_desk import Reaction
from shared.domain.errors import TicketNotFound
from shared.settings import ROOT, Settings
from tests.integration.test_dispatch_races import ADMIN, TUESDAY_0200
from tests.integration.test_dispatch_races import OUTAGE as RACED_OUTAGE

WEDNESDAY_1000 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone(timedelta(hours=8)))
OUTAGE = RACED_OUTAGE | {"device": {"model": "S5700-28C-EI"}}  # a network device: E-013's skill


@pytest.fixture
def parts(database_url: str) -> Iterator[tuple[Intake, Dispatch]]:
    clock = FakeClock(TUESDAY_0200)
    settings = Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml")
    front, back = intake(settings, clock=clock), dispatch(settings, clock=clock)
    yield front, back
    back.close()
    front.close()


def open_tickets(front: Intake, count: int, **changes: Any) -> list[UUID]:
    return [front.desk.open(details=OUTAGE | changes, token=None, correlation_id="batch", actor=ADMIN["actor"]).ticket.id
            for _ in range(count)]


def opened(tickets: list[UUID]) -> list[Reaction]:
    return [Reaction(ticket, 1, "ticket.opened", "batch") for ticket in tickets]


def counting_saves(back: Dispatch) -> list[int]:
    """How many aggregates each save of the dispatcher's store held."""
    store, saves = back.tickets.store, []
    save = store.save

    def counted(*aggregates: Any, **options: Any) -> Any:
        saves.append(len(aggregates))
        return save(*aggregates, **options)

    store.save = counted  # type: ignore[method-assign]
    return saves


def carried(back: Dispatch, code: str) -> list[str]:
    return list(back.roster.get(code).tickets)


def test_a_batch_spreads_tickets_over_engineers_as_one_after_the_other_would(parts: tuple[Intake, Dispatch]) -> None:
    front, back = parts
    # At 02:00 on a Tuesday, E-013 (汉中, network, on Monday's call) and this engineer tie
    # on every rule but load: one after the other, the least loaded takes the next ticket.
    back.roster.put("E-100", {"name": "夜班", "branch": "汉中", "level": "L2", "skills": ["network"], "hours": "always",
                              "max_tickets": 3}, **ADMIN)
    tickets = open_tickets(front, 6)
    saves = counting_saves(back)

    outcomes = back.dispatcher.react_many(opened(tickets))

    leads = [back.tickets.get(t).lead_engineer for t in tickets]
    assert leads == ["E-013", "E-100", "E-013", "E-100", "E-013", "E-100"]
    assert all(outcomes[t] == f"{lead} assigned as lead" for t, lead in zip(tickets, leads))
    assert carried(back, "E-013") == [str(t) for t in tickets[0::2]]
    assert carried(back, "E-100") == [str(t) for t in tickets[1::2]]
    assert len(saves) == 1  # six tickets and two engineers, one transaction


def test_a_full_engineer_in_a_batch_passes_the_next_tickets_on(parts: tuple[Intake, Dispatch]) -> None:
    front, back = parts
    tickets = open_tickets(front, 4)  # E-013 carries at most 3
    back.dispatcher.react_many(opened(tickets))
    assert [back.tickets.get(t).lead_engineer for t in tickets] == ["E-013", "E-013", "E-013", "E-019"]
    assert len(carried(back, "E-013")) == 3


def test_a_failed_decision_is_answered_apart_and_leaves_nothing_of_its_own(parts: tuple[Intake, Dispatch],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    front, back = parts
    first, doomed, last = open_tickets(front, 3)
    run = dispatch_desk._Staffing.run

    def failing_after_deciding(staffing: Any, version: int, event_type: str) -> str:
        done = run(staffing, version, event_type)  # the engineer has taken the ticket in the workspace
        if staffing.ticket.id == doomed:
            raise ConnectionError("lost the database mid-decision")
        return done

    monkeypatch.setattr(dispatch_desk._Staffing, "run", failing_after_deciding)
    missing = uuid4()
    outcomes = back.dispatcher.react_many([*opened([first, doomed, last]), Reaction(missing, 1, "ticket.opened", "batch")])

    assert isinstance(outcomes[doomed], ConnectionError)
    assert isinstance(outcomes[missing], TicketNotFound)
    assert outcomes[first] == outcomes[last] == "E-013 assigned as lead"
    assert back.tickets.get(doomed).lead_engineer is None
    assert [type(e).__name__ for e in back.tickets.history(doomed)][-1] != "EngineerAssigned"
    assert carried(back, "E-013") == [str(first), str(last)]  # the doomed ticket's take was never saved


def test_two_tickets_of_one_batch_wanting_the_last_unit_one_gets_it(parts: tuple[Intake, Dispatch]) -> None:
    front, back = parts
    front.desk.clock.set(WEDNESDAY_1000)  # type: ignore[attr-defined]
    back.stock.put("SP-HZ-099", {"serial": "SN-LAST", "model": "NE40E-X8A", "warehouse": "WH-HZ"}, **ADMIN)
    tickets = open_tickets(front, 2, device={"model": "NE40E-X8A"})
    back.dispatcher.react_many(opened(tickets))
    escalations = []
    for ticket in tickets:
        escalated = front.desk.act(ticket, "escalate", expected_version=None, actor={"kind": "service", "id": "sla_clock"},
                                   correlation_id="breach", level="L4", reason="resolution target breached",
                                   trigger="breach:resolution")
        escalations.append(Reaction(ticket, escalated.version, "ticket.escalated", "breach"))

    back.dispatcher.react_many(escalations)

    lent = [back.tickets.get(t).spare_units for t in tickets]
    assert sorted(map(list, lent)) == [[], ["SP-HZ-099"]]
    unit = back.stock.get("SP-HZ-099")
    assert [type(e).__name__ for e in back.tickets.store.events.get(unit.id)].count("Reserved") == 1
    assert str(unit.ticket_id) in {str(t) for t in tickets}
    without = next(t for t, units in zip(tickets, lent) if not units)
    assert "SpareUnitUnavailable" in [type(e).__name__ for e in back.tickets.history(without)]


def test_a_decision_takes_engineers_as_the_caught_up_list_holds_them(parts: tuple[Intake, Dispatch],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the engineer list has caught up, a decision reads no engineer's stream: the
    list has just applied every event of it."""
    front, back = parts
    first, second = open_tickets(front, 2)
    back.dispatcher.react_many(opened([first]))  # the list now holds E-013 as it took the first ticket

    def unread(code: str) -> Any:
        raise AssertionError(f"read {code}'s stream")

    monkeypatch.setattr(back.roster, "get", unread)
    assert back.dispatcher.react_many(opened([second]))[second] == "E-013 assigned as lead"
    monkeypatch.undo()
    assert carried(back, "E-013") == [str(first), str(second)]


def test_an_engineer_changed_since_the_list_caught_up_is_a_conflict_decided_again(
    parts: tuple[Intake, Dispatch], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another dispatch process books the engineer between this one's catch-up and its
    save: the save conflicts, and the decision, taken again, catches up and sees it."""
    front, back = parts
    warm, mine, theirs = open_tickets(front, 3)
    back.dispatcher.react_many(opened([warm]))  # the list holds E-013, with one ticket
    other = dispatch(Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml"),
                     clock=back.dispatcher.clock)
    refresh, looks = back.dispatcher.reads.refresh, []

    def others_booking_after_the_look(**options: Any) -> None:
        refresh(**options)
        looks.append(1)
        if len(looks) == 1:
            assert other.dispatcher.react_many(opened([theirs]))[theirs] == "E-013 assigned as lead"

    monkeypatch.setattr(back.dispatcher.reads, "refresh", others_booking_after_the_look)
    try:
        assert back.dispatcher.react_many(opened([mine]))[mine] == "E-013 assigned as lead"
    finally:
        other.close()
    assert len(looks) == 2  # the conflict, then the decision again
    assert carried(back, "E-013") == [str(warm), str(theirs), str(mine)]  # 3: E-013's most
