"""The Ticket aggregate's lifecycle: every command from every status."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest

from shared.domain.errors import AlreadyAcknowledged, IllegalTransition, SeverityUnchanged
from shared.domain.ticket import Severity, Status, Ticket

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
WHO = {"actor": {"kind": "engineer", "id": "E-1"}, "correlation_id": "c"}

ARGUMENTS = {
    "acknowledge": {"plan": "remote diagnosis"},
    "comment": {"text": "note", "public": False},
    "change_severity": {"severity": Severity.P3, "reason": "workaround found"},
    "await_customer": {"reason": "log files"},
    "record_customer_response": {"message": "sent"},
    "arrive": {"engineer": "E-1", "note": ""},
    "resolve": {"resolution": "fixed", "cause": "disk"},
    "confirm": {"satisfaction": 4, "comment": ""},
    "reopen": {"reason": "again"},
    "close": {"note": ""},
    "cancel": {"reason": "duplicate"},
    "request_visit": {"reason": "needs hands on the device"},
    "record_callback": {"note": "customer confirms by phone"},
    "escalate": {"level": "L2", "reason": "customer complaint", "trigger": "manual"},
}

# The shortest path of commands that brings a new ticket into each status.
PATHS = {
    Status.OPEN: [],
    Status.ACKNOWLEDGED: ["acknowledge"],
    Status.ON_SITE: ["acknowledge", "arrive"],
    Status.AWAITING_CUSTOMER: ["acknowledge", "await_customer"],
    Status.RESOLVED: ["acknowledge", "resolve"],
    Status.CONFIRMED: ["acknowledge", "resolve", "confirm"],
    Status.CLOSED: ["acknowledge", "resolve", "close"],
    Status.CANCELLED: ["cancel"],
}

# What each command may do, from which statuses, and where it leads.
EXPECTED = {
    "acknowledge": {Status.OPEN: Status.ACKNOWLEDGED},
    "arrive": {Status.ACKNOWLEDGED: Status.ON_SITE},
    "await_customer": {Status.ACKNOWLEDGED: Status.AWAITING_CUSTOMER, Status.ON_SITE: Status.AWAITING_CUSTOMER},
    "record_customer_response": {Status.AWAITING_CUSTOMER: Status.ACKNOWLEDGED},
    "resolve": {Status.ACKNOWLEDGED: Status.RESOLVED, Status.ON_SITE: Status.RESOLVED},
    "confirm": {Status.RESOLVED: Status.CONFIRMED},
    "reopen": {Status.RESOLVED: Status.ACKNOWLEDGED, Status.CONFIRMED: Status.ACKNOWLEDGED},
    "close": {Status.RESOLVED: Status.CLOSED, Status.CONFIRMED: Status.CLOSED},
    "cancel": {s: Status.CANCELLED for s in (Status.OPEN, Status.ACKNOWLEDGED, Status.ON_SITE, Status.AWAITING_CUSTOMER)},
    "change_severity": {s: s for s in (Status.OPEN, Status.ACKNOWLEDGED, Status.ON_SITE, Status.AWAITING_CUSTOMER)},
    "comment": {s: s for s in Status},
    "request_visit": {s: s for s in (Status.OPEN, Status.ACKNOWLEDGED, Status.AWAITING_CUSTOMER)},
    "record_callback": {Status.RESOLVED: Status.RESOLVED},
    "escalate": {s: s for s in (Status.OPEN, Status.ACKNOWLEDGED, Status.ON_SITE, Status.AWAITING_CUSTOMER, Status.RESOLVED)},
}


def new_ticket(severity: str = "P1") -> Ticket:
    return Ticket.open(
        id=uuid4(), at=T0, number="T-2026-000001", severity=severity, category="fault", channel="hotline",
        customer="C-1", contract="K-1", site={"city": "宝鸡"}, device={}, summary="down", description="",
        contact={}, source={}, request_digest="d", **WHO,
    )


def ticket_in(status: Status) -> Ticket:
    ticket = new_ticket()
    for minutes, command in enumerate(PATHS[status], start=1):
        getattr(ticket, command)(at=T0 + timedelta(minutes=minutes), **ARGUMENTS[command], **WHO)
    assert ticket.status is status
    return ticket


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("command", list(EXPECTED))
def test_every_command_from_every_status(command: str, status: Status) -> None:
    ticket = ticket_in(status)
    version = ticket.version
    at = T0 + timedelta(hours=1)
    if status in EXPECTED[command]:
        getattr(ticket, command)(at=at, **ARGUMENTS[command], **WHO)
        assert ticket.status is EXPECTED[command][status]
        assert ticket.version == version + 1 and ticket.modified_on == at
    else:
        with pytest.raises(IllegalTransition) as refused:
            getattr(ticket, command)(at=at, **ARGUMENTS[command], **WHO)
        assert refused.value.command == command and refused.value.ticket_status == status
        assert ticket.version == version  # a refused command records nothing


def test_acknowledging_twice_is_its_own_error() -> None:
    ticket = ticket_in(Status.ON_SITE)
    with pytest.raises(AlreadyAcknowledged, match="already acknowledged"):
        ticket.acknowledge(at=T0, plan="p", **WHO)


def test_escalation_only_goes_up_the_ladder() -> None:
    ticket = new_ticket()
    ticket.escalate(level="L3", reason="on-site breached", trigger="breach:on_site", at=T0, **WHO)
    assert ticket.escalation_level == "L3"
    for level in ("L2", "L3", "L9"):
        with pytest.raises(IllegalTransition):
            ticket.escalate(level=level, reason="r", trigger="manual", at=T0, **WHO)


def test_resolving_a_closed_ticket_says_so() -> None:
    with pytest.raises(IllegalTransition, match="cannot resolve a ticket that is closed"):
        ticket_in(Status.CLOSED).resolve(at=T0, resolution="r", cause="", **WHO)


def test_severity_change_keeps_the_previous_and_the_reason() -> None:
    ticket = new_ticket("P2")
    ticket.change_severity(at=T0, severity=Severity.P1, reason="whole site down", **WHO)
    event = ticket.collect_events()[-1]
    assert (event.previous, event.severity, event.reason) == ("P2", "P1", "whole site down")
    assert ticket.severity is Severity.P1
    with pytest.raises(SeverityUnchanged):
        ticket.change_severity(at=T0, severity=Severity.P1, reason="again", **WHO)


def test_customer_response_returns_to_where_work_paused() -> None:
    ticket = ticket_in(Status.ON_SITE)
    ticket.await_customer(at=T0, reason="spare part approval", **WHO)
    ticket.record_customer_response(at=T0, message="approved", **WHO)
    assert ticket.status is Status.ON_SITE


def test_reopen_starts_work_again_and_counts() -> None:
    ticket = ticket_in(Status.CONFIRMED)
    ticket.reopen(at=T0 + timedelta(days=1), reason="fault came back", **WHO)
    assert (ticket.status, ticket.reopen_count, ticket.resolved_at, ticket.confirmed_at) == (
        Status.ACKNOWLEDGED, 1, None, None,
    )
    ticket.arrive(at=T0 + timedelta(days=1, hours=1), engineer="E-2", note="", **WHO)
    assert ticket.status is Status.ON_SITE


def test_events_record_actor_correlation_and_instant() -> None:
    ticket = new_ticket()
    ticket.acknowledge(at=T0 + timedelta(minutes=12), plan="call back", actor={"kind": "agent", "id": "A-7"}, correlation_id="x-1")
    opened, acknowledged = ticket.collect_events()
    assert opened.timestamp == ticket.received_at == T0
    assert (acknowledged.actor, acknowledged.correlation_id) == ({"kind": "agent", "id": "A-7"}, "x-1")
    assert acknowledged.timestamp == ticket.acknowledged_at == T0 + timedelta(minutes=12)


def test_replaying_the_events_rebuilds_the_same_state() -> None:
    ticket = ticket_in(Status.CONFIRMED)
    replayed = None
    for event in ticket.collect_events():
        replayed = event.mutate(replayed)
    assert vars(replayed) == vars(ticket)
