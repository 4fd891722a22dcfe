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
from shared.sla.targets import Facts, plan_targets

POLICY_ACTOR: Actor = {"kind": "service", "id": "sla-policy"}


class ContractLookup(Protocol):
    def find(self, code: str) -> Contract | None: ...


class Commitments:
    def __init__(self, policy: Policy, contracts: ContractLookup) -> None:
        self.policy = policy
        self.contracts = contracts

    def reading_contracts_once(self) -> Commitments:
        """These commitments, reading each contract at most once: for a batch of
        tickets opened at one instant, which must all see the same terms anyway."""
        return Commitments(self.policy, _ReadOnce(self.contracts))

    def on_open(self, ticket: Ticket, *, at: datetime, correlation_id: str) -> None:
        contract = self.contracts.find(ticket.contract) if ticket.contract else None
        owed = entitlement(contract, at, contract_code=ticket.contract, customer=ticket.customer)
        terms = _jsonable(owed)
        if not owed.committed:
            ticket.record_no_commitment(
                reason=owed.reason or "no commitment", entitlement=terms, at=at,
                actor=POLICY_ACTOR, correlation_id=correlation_id,
            )
            return
        plan = plan_targets(self.policy, _facts(ticket, terms), ticket.received_at)
        ticket.commit_sla(
            plan=plan, entitlement=terms, start=ticket.received_at, restart=False, reason="opened",
            at=at, actor=POLICY_ACTOR, correlation_id=correlation_id,
        )

    def on_severity_change(self, ticket: Ticket, *, at: datetime, correlation_id: str) -> None:
        if ticket.sla_plan is None:
            return  # nothing was promised, so nothing to recompute
        retroactive = self.policy.severity_change == "retroactive"
        start = ticket.received_at if retroactive else at
        plan = plan_targets(self.policy, _facts(ticket, ticket.entitlement), start)
        ticket.commit_sla(
            plan=plan, entitlement=ticket.entitlement, start=start, restart=not retroactive,
            reason=f"severity changed to {ticket.severity}", at=at, actor=POLICY_ACTOR, correlation_id=correlation_id,
        )



class _ReadOnce:
    def __init__(self, contracts: ContractLookup) -> None:
        self.contracts = contracts
        self.read: dict[str, Contract | None] = {}

    def find(self, code: str) -> Contract | None:
        if code not in self.read:
            self.read[code] = self.contracts.find(code)
        return self.read[code]


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
