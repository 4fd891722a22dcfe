"""The dispatch aggregates and the ticket's dispatch commands: engineers' capacity,
a spare unit's lifecycle from every state, and a ticket's engineers and loans."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest

from shared.domain.engineer import Engineer, Profile
from shared.domain.errors import (
    EngineerUnavailable, IllegalTransition, IllegalUnitTransition, InvalidRosterEntry, LoanOutstanding, NotOnTicket,
)
from shared.domain.spare_unit import ALLOWED_FROM, Conversion, Record, SpareUnit, UnitState
from shared.domain.ticket import Status, Ticket
from tests.unit.test_ticket import ARGUMENTS, new_ticket, ticket_in

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
WHO = {"actor": {"kind": "service", "id": "dispatch"}, "correlation_id": "c"}
PROFILE = {"name": "何志强", "branch": "汉中", "level": "L2", "skills": ["security", "network"], "hours": "cn-business",
           "on_call": ["thu", "mon"], "max_tickets": 2}


def engineer(**changes: object) -> Engineer:
    return Engineer.register("E-013", Profile.of(PROFILE | changes), at=T0, **WHO)


def take(e: Engineer, ticket_id=None) -> bool:  # type: ignore[no-untyped-def]
    return e.take(ticket_id=ticket_id or uuid4(), number="T-1", role="lead", reason="r", at=T0, **WHO)


# -- engineers --------------------------------------------------------------------------


def test_a_profile_is_checked_and_normalised() -> None:
    profile = Profile.of(PROFILE, branches={"汉中"}, calendars={"cn-business"}, skills={"network", "security"})
    assert (profile.skills, profile.on_call, profile.active) == (("network", "security"), ("mon", "thu"), True)
    for bad, field in [({"level": "L4"}, "level"), ({"on_call": ["monday"]}, "on_call"), ({"max_tickets": True}, "max_tickets"),
                       ({"branch": "北京"}, "branch"), ({"hours": "24x7"}, "hours"), ({"skills": ["cooking"]}, "skills"),
                       ({"shoe_size": 42}, "shoe_size"), ({"name": " "}, "name")]:
        with pytest.raises(InvalidRosterEntry) as refused:
            Profile.of(PROFILE | bad, branches={"汉中"}, calendars={"cn-business"}, skills={"network", "security"})
        assert refused.value.field == field


def test_capacity_is_guarded_by_the_engineers_stream() -> None:
    e = engineer()
    first = uuid4()
    assert take(e, first) and take(e)
    assert not take(e, first)  # already carried: nothing recorded
    with pytest.raises(EngineerUnavailable, match="already carries 2 of at most 2"):
        take(e)
    assert e.release(ticket_id=first, reason="resolved", at=T0, **WHO)
    assert not e.release(ticket_id=first, reason="again", at=T0, **WHO)
    assert take(e) and e.load == 2


def test_an_inactive_engineer_takes_nothing_and_an_unchanged_profile_records_nothing() -> None:
    e = engineer()
    assert not e.amend(Profile.of(PROFILE), at=T0, **WHO)
    assert e.amend(Profile.of(PROFILE | {"active": False}), at=T0, **WHO)
    assert e.collect_events()[-1].changes == {"active": False}
    with pytest.raises(EngineerUnavailable, match="not active"):
        take(e)


def test_a_copy_of_an_engineer_changes_apart_from_the_original() -> None:
    # Dispatch books engineers on copies of its engineer list's (ReadModels.known): a
    # booking that leaks into the list's own engineer would be counted twice.
    e = engineer(max_tickets=3)
    carried = uuid4()
    take(e, carried)
    e.collect_events()
    twin = copy.deepcopy(e)
    take(twin)
    assert twin.release(ticket_id=carried, reason="resolved", at=T0, **WHO)
    assert twin.amend(Profile.of(PROFILE | {"max_tickets": 3, "active": False}), at=T0, **WHO)
    assert (e.load, e.tickets, e.profile.active, e.version, e.collect_events()) == (1, {str(carried): "T-1"}, True, 2, [])
    assert (twin.load, twin.profile.active, twin.version, len(twin.collect_events())) == (1, False, 5, 3)
    assert twin.chain_head != e.chain_head

# -- spare units ------------------------------------------------------------------------

STEPS = {
    "amend": lambda u: u.amend(Record("SN-1", "S5700-28C-EI", "WH-XA"), at=T0, **WHO),
    "reserve": lambda u: u.reserve(ticket_id=uuid4(), number="T-1", reason="r", at=T0, **WHO),
    "release": lambda u: u.release(reason="cancelled", at=T0, **WHO),
    "ship": lambda u: u.ship(reference="SF-1", at=T0, **WHO),
    "install": lambda u: u.install(return_by=T0 + timedelta(days=5), at=T0, **WHO),
    "return_to_stock": lambda u: u.return_to_stock(note="", at=T0, **WHO),
    "restock": lambda u: u.restock(note="", at=T0, **WHO),
    "convert": lambda u: u.convert(how=Conversion.SOLD, note="", at=T0, **WHO),
    "retire": lambda u: u.retire(reason="end of life", at=T0, **WHO),
}
PATHS = {
    UnitState.AVAILABLE: [],
    UnitState.RESERVED: ["reserve"],
    UnitState.SHIPPED: ["reserve", "ship"],
    UnitState.INSTALLED: ["reserve", "ship", "install"],
    UnitState.RETURNED: ["reserve", "ship", "install", "return_to_stock"],
    UnitState.RETIRED: ["retire"],
}


def unit_in(state: UnitState) -> SpareUnit:
    unit = SpareUnit.register("SP-HZ-001", Record("SN-1", "S5700-28C-EI", "WH-HZ"), at=T0, **WHO)
    for step in PATHS[state]:
        STEPS[step](unit)
    assert unit.state is state
    return unit


@pytest.mark.parametrize("state", list(UnitState))
@pytest.mark.parametrize("step", list(STEPS))
def test_every_unit_step_from_every_state(step: str, state: UnitState) -> None:
    unit = unit_in(state)
    version = unit.version
    if state in ALLOWED_FROM[step]:
        STEPS[step](unit)
        assert unit.version == version + 1
    else:
        with pytest.raises(IllegalUnitTransition):
            STEPS[step](unit)
        assert unit.version == version


def test_a_loan_is_due_back_and_overdue_once() -> None:
    unit = unit_in(UnitState.SHIPPED)
    with pytest.raises(IllegalUnitTransition, match="not after now"):
        unit.install(return_by=T0, at=T0, **WHO)
    unit.install(return_by=T0 + timedelta(days=5), at=T0, **WHO)
    assert not unit.flag_overdue(at=T0 + timedelta(days=5), **WHO)  # due at that instant, not yet late
    assert unit.flag_overdue(at=T0 + timedelta(days=5, seconds=1), **WHO)
    assert not unit.flag_overdue(at=T0 + timedelta(days=6), **WHO)
    unit.return_to_stock(note="repaired", at=T0 + timedelta(days=7), **WHO)
    assert (unit.overdue, unit.return_by, unit.ticket_id) == (False, None, None)


# -- a ticket's engineers and loans -------------------------------------------------------


def assign(ticket: Ticket, code: str, role: str = "lead", level: str = "L2", for_level: str = "L1") -> None:
    ticket.assign_engineer(engineer=code, level=level, role=role, for_level=for_level, rules=["same city (汉中)"],
                           reason="r", cause=1, at=T0, **WHO)


def test_decline_and_complaint_take_the_engineer_off_for_good() -> None:
    ticket = new_ticket()
    assign(ticket, "E-013")
    ticket.decline_assignment(engineer="E-013", reason="在外地", at=T0, **WHO)
    assert (ticket.lead_engineer, ticket.excluded_engineers) == (None, {"E-013"})
    assign(ticket, "E-019")
    assert ticket.accept_assignment(engineer="E-019", at=T0, **WHO)
    assert not ticket.accept_assignment(engineer="E-019", at=T0, **WHO)
    with pytest.raises(IllegalTransition, match="hand the ticket back instead"):
        ticket.decline_assignment(engineer="E-019", reason="x", at=T0, **WHO)
    ticket.complain_about_engineer(engineer="E-019", level="L2", reason="态度差", at=T0, **WHO)
    assert (ticket.engineers, ticket.excluded_engineers, ticket.engineer_floor) == ((), {"E-013", "E-019"}, "L2")
    with pytest.raises(NotOnTicket):
        ticket.depart(engineer="E-019", eta="", at=T0, **WHO)


def test_a_new_lead_takes_over_and_the_old_one_stays_as_support() -> None:
    ticket = new_ticket()
    assign(ticket, "E-013")
    assign(ticket, "E-003", role="lead", level="L3", for_level="L3")
    assert ticket.collect_events()[-1].replaces == "E-013"
    assert [(a.engineer, a.role) for a in ticket.assignments] == [("E-013", "support"), ("E-003", "lead")]
    assert (ticket.lead_engineer, ticket.staffed_level) == ("E-003", "L3")
    with pytest.raises(IllegalTransition, match="already on ticket"):
        assign(ticket, "E-013")


@pytest.mark.parametrize("ending", ["return_spare", "convert_loan"])
@pytest.mark.parametrize(("finish", "path", "outcome"), [("close", ["acknowledge", "resolve"], Status.CLOSED),
                                                         ("cancel", [], Status.CANCELLED)])
def test_a_ticket_with_a_unit_on_loan_cannot_be_closed_or_cancelled_until_it_is_back_or_converted(
    ending: str, finish: str, path: list[str], outcome: Status,
) -> None:
    ticket = new_ticket()
    ticket.reserve_spare(unit="SP-HZ-001", serial="SN-1", model="S5700", warehouse="WH-HZ", distance_km=0.0,
                         reason="r", cause=0, at=T0, **WHO)
    ticket.ship_spare(unit="SP-HZ-001", reference="", at=T0, **WHO)
    ticket.install_spare(unit="SP-HZ-001", return_by=T0 + timedelta(days=5), at=T0, **WHO)
    for command in path:
        getattr(ticket, command)(at=T0, **ARGUMENTS[command], **WHO)
    before = ticket.version
    with pytest.raises(LoanOutstanding, match="SP-HZ-001 is still on loan") as refused:
        getattr(ticket, finish)(at=T0, **ARGUMENTS[finish], **WHO)
    assert (refused.value.command, ticket.version) == (finish, before)
    extra = {"how": "sold"} if ending == "convert_loan" else {}
    getattr(ticket, ending)(unit="SP-HZ-001", note="", at=T0, **extra, **WHO)
    getattr(ticket, finish)(at=T0, **ARGUMENTS[finish], **WHO)
    assert ticket.status is outcome and not ticket.spare_units


def test_only_units_of_the_ticket_move_on_it() -> None:
    ticket = new_ticket()
    with pytest.raises(NotOnTicket, match="SP-X is not on ticket"):
        ticket.ship_spare(unit="SP-X", reference="", at=T0, **WHO)
    ticket.reserve_spare(unit="SP-X", serial="S", model="M", warehouse="WH-HZ", distance_km=None, reason="r", cause=0, at=T0, **WHO)
    with pytest.raises(NotOnTicket, match="not on loan"):
        ticket.convert_loan(unit="SP-X", how="sold", note="", at=T0, **WHO)


def test_dispatch_events_replay_to_the_same_state() -> None:
    ticket = ticket_in(Status.ACKNOWLEDGED)
    assign(ticket, "E-013")
    ticket.accept_assignment(engineer="E-013", at=T0, **WHO)
    assign(ticket, "E-020", role="support", for_level="L2")
    ticket.hand_back(engineer="E-020", reason="busy", at=T0, **WHO)
    ticket.reserve_spare(unit="SP-1", serial="S", model="M", warehouse="WH-HZ", distance_km=1.5, reason="r", cause=7, at=T0, **WHO)
    ticket.release_spare(unit="SP-1", reason="not needed", at=T0, **WHO)
    replayed = None
    for event in ticket.collect_events():
        replayed = event.mutate(replayed)
    assert vars(replayed) == vars(ticket)
    assert replayed.dispatch_cause == 7
