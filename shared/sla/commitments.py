"""What a ticket is owed: at opening, the contract's entitlement and the policy's
targets are recorded on the ticket; on a severity change the targets are recomputed.
Both happen in the same save as the command that caused them."""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Protocol

from shared.domain.contract import Contract
from shared.domain.entitlement import Entitlement, entitlement
from shared.domain.ticket import Actor, Ticket
from shared.sla.policy import Policy
from shared.sla.targets import Facts, Plan, plan_targets

POLICY_ACTOR: Actor = {"kind": "service", "id": "sla-policy"}


class ContractLookup(Protocol):
    def find(self, code: str) -> Contract | None: ...


class Commitments:
    def __init__(self, policy: Policy, contracts: ContractLookup) -> None:
        self.policy = policy
        self.contracts = contracts

    def for_one_batch(self) -> Commitments:
        """These commitments for a batch of tickets opened at one instant: tickets alike
        (a storm from one site: one contract and customer, the same facts and start) are
        owed the same, so it is worked out, and their contract read, once for them all."""
        return _OneBatch(self.policy, self.contracts)

    def on_open(self, ticket: Ticket, *, at: datetime, correlation_id: str) -> None:
        owed, terms = self._owed(ticket.contract, ticket.customer, at)
        if not owed.committed:
            ticket.record_no_commitment(
                reason=owed.reason or "no commitment", entitlement=dict(terms), at=at,
                actor=POLICY_ACTOR, correlation_id=correlation_id,
            )
            return
        plan = self._plan(_facts(ticket, terms), ticket.received_at)
        ticket.commit_sla(
            plan=plan, entitlement=dict(terms), start=ticket.received_at, restart=False, reason="opened",
            at=at, actor=POLICY_ACTOR, correlation_id=correlation_id,
        )

    def on_severity_change(self, ticket: Ticket, *, at: datetime, correlation_id: str) -> None:
        if ticket.sla_plan is None:
            return  # nothing was promised, so nothing to recompute
        retroactive = self.policy.severity_change == "retroactive"
        start = ticket.received_at if retroactive else at
        plan = self._plan(_facts(ticket, ticket.entitlement), start)
        ticket.commit_sla(
            plan=plan, entitlement=ticket.entitlement, start=start, restart=not retroactive,
            reason=f"severity changed to {ticket.severity}", at=at, actor=POLICY_ACTOR, correlation_id=correlation_id,
        )

    def _owed(self, code: str | None, customer: str, at: datetime) -> tuple[Entitlement, dict[str, Any]]:
        """What a ticket naming contract `code` for `customer` at `at` is owed, and those
        terms as recorded."""
        contract = self.contracts.find(code) if code else None
        owed = entitlement(contract, at, contract_code=code, customer=customer)
        return owed, _jsonable(owed)

    def _plan(self, facts: Facts, start: datetime) -> Plan:
        return plan_targets(self.policy, facts, start)


class _OneBatch(Commitments):
    """See Commitments.for_one_batch. Each ticket still records its own copy
    of the terms; the plan is immutable, so tickets may share it."""

    def __init__(self, policy: Policy, contracts: ContractLookup) -> None:
        super().__init__(policy, contracts)
        self._owed_to: dict[tuple[str | None, str, datetime], tuple[Entitlement, dict[str, Any]]] = {}
        self._plans: dict[tuple[Facts, datetime], Plan] = {}

    def _owed(self, code: str | None, customer: str, at: datetime) -> tuple[Entitlement, dict[str, Any]]:
        key = (code, customer, at)
        if key not in self._owed_to:
            self._owed_to[key] = super()._owed(code, customer, at)
        return self._owed_to[key]

    def _plan(self, facts: Facts, start: datetime) -> Plan:
        if (facts, start) not in self._plans:
            self._plans[facts, start] = super()._plan(facts, start)
        return self._plans[facts, start]


def _facts(ticket: Ticket, terms: dict[str, Any]) -> Facts:
    """The rules' view of a ticket: its own facts and its contract's recorded terms."""
    return Facts(
        severity=str(ticket.severity), category=str(ticket.category), level=terms["level"],
        tier=terms["tier"], zone=ticket.site.get("zone") or terms["zone"], billable=terms["billable"],
    )


def _jsonable(owed: Entitlement) -> dict[str, Any]:
    terms = asdict(owed)
    terms["warranty_until"] = owed.warranty_until.isoformat() if owed.warranty_until else None
    return terms
