"""What a ticket is owed at opening, worked out once for tickets alike in one batch:
each ticket must record exactly what it would have been owed alone."""
from __future__ import annotations

from datetime import date, datetime, timezone
from uuid import uuid4

from shared.domain.contract import Contract, Terms
from shared.domain.ticket import Ticket
from shared.settings import ROOT
from shared.sla.commitments import Commitments
from shared.sla.policy import load_policy

POLICY = load_policy(ROOT / "deploy" / "policy.toml")
AT = datetime(2026, 5, 6, 2, 0, tzinfo=timezone.utc)  # a Wednesday, 10:00 in Shanghai
WHO = {"actor": {"kind": "client", "id": "zabbix"}, "correlation_id": "c"}
CONTRACT = Contract.register(
    "K-1", Terms.of({"customer": "C-1", "level": "premium", "tier": "normal", "valid_from": date(2026, 1, 1),
                     "valid_to": date(2026, 12, 31), "warranty_until": None, "region": "陕南", "zone": "in_city",
                     "dedicated_engineer": None}),
    at=AT, **WHO,
)


class CountingBook:
    def __init__(self) -> None:
        self.reads = 0

    def find(self, code: str) -> Contract | None:
        self.reads += 1
        return CONTRACT if code == "K-1" else None


def opened(severity: str = "P1", customer: str = "C-1", contract: str | None = "K-1") -> Ticket:
    return Ticket.open(
        id=uuid4(), at=AT, number="T-2026-000001", severity=severity, category="fault", channel="monitoring",
        customer=customer, contract=contract, site={"city": "汉中"}, device={}, summary="s", description="",
        contact={}, source={}, request_digest="d", **WHO,
    )


def recorded(ticket: Ticket) -> dict:
    """The commitment event as stored, without what differs between any two tickets."""
    event = ticket.collect_events()[-1]
    return {k: v for k, v in event.__dict__.items() if k != "originator_id" and "hash" not in k}


def test_tickets_alike_in_a_batch_record_what_each_would_alone_and_the_contract_is_read_once() -> None:
    book = CountingBook()
    batch = Commitments(POLICY, book).for_one_batch()
    cases = [{}, {}, {"severity": "P3"}, {"customer": "C-2"}, {"contract": None}]
    tickets = [opened(**case) for case in cases]
    for ticket in tickets:
        batch.on_open(ticket, at=AT, correlation_id="c")
    # One read for C-1's three tickets; C-2 names C-1's contract and gets nothing from it.
    assert book.reads == 2

    for ticket, case in zip(tickets, cases):
        alone = opened(**case)
        Commitments(POLICY, CountingBook()).on_open(alone, at=AT, correlation_id="c")
        assert recorded(ticket) == recorded(alone)
    assert tickets[0].sla_plan.severity == "P1" and tickets[2].sla_plan.severity == "P3"
    assert tickets[0].sla.clocks["response"].seconds < tickets[2].sla.clocks["response"].seconds
    assert tickets[3].sla_plan is None and tickets[3].no_commitment_reason is not None
    # Each ticket holds its own terms: a change to one cannot reach another.
    assert tickets[0].entitlement == tickets[1].entitlement and tickets[0].entitlement is not tickets[1].entitlement

