"""Entitlement: what a contract entitles a ticket to at the moment it is received.

Pure: the caller looks the contract up and passes the instant; nothing else (no
clock, no store) goes into the answer.

Outside the validity period the vendor promises nothing (seed 001), so no SLA
deadline may be computed unless `committed`; the ticket itself is still accepted.
Validity and warranty are judged on the local date of `at` in the contract's own
time zone: a fault reported at 00:30 on 1 July in Shanghai falls outside a contract
valid to 30 June, although it is still 30 June (16:30) in UTC.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from shared.domain.contract import Contract, Tier


@dataclass(frozen=True)
class Entitlement:
    committed: bool  # whether the vendor owes any SLA at all
    reason: str | None  # why not, when not committed
    contract: str | None  # the contract code the ticket named
    level: str | None  # service level: picks the SLA calendar and targets
    tier: str  # "normal" or "vip"; VIP raises priority
    zone: str | None  # where the site lies, for on-site targets
    billable: bool  # the work is paid for: no warranty covers it on that day
    warranty_until: date | None
    dedicated_engineer: str | None  # 专人专线: who to dispatch first
    region: str | None


def entitlement(
    contract: Contract | None, at: datetime, *, contract_code: str | None, customer: str | None = None
) -> Entitlement:
    """The entitlement of a ticket received `at` that named `contract_code`; `contract`
    is that contract as found in the store (None when it is not there).

    A known contract's terms are reported even when it commits to nothing (expired or
    not yet valid), so the desk still sees its dedicated engineer or region. Another
    customer's contract (given `customer`, the ticket's) is as good as unknown: it
    neither entitles the ticket nor shows its terms."""
    if at.tzinfo is None:
        raise ValueError("entitlement needs a timezone-aware instant")
    if contract is None or (customer is not None and contract.customer != customer):
        reason = f"unknown contract {contract_code}" if contract_code else "no contract given"
        return Entitlement(
            committed=False, reason=reason, contract=contract_code, level=None, tier=Tier.NORMAL.value,
            zone=None, billable=True, warranty_until=None, dedicated_engineer=None, region=None,
        )
    if contract_code is not None and contract_code != contract.code:
        raise ValueError(f"contract {contract.code} was passed for code {contract_code}")
    day = at.astimezone(ZoneInfo(contract.time_zone)).date()
    reason = None
    if day < contract.valid_from:
        reason = f"contract {contract.code} not valid until {contract.valid_from}"
    elif day > contract.valid_to:
        reason = f"contract {contract.code} expired on {contract.valid_to}"
    under_warranty = contract.warranty_until is not None and day <= contract.warranty_until
    return Entitlement(
        committed=reason is None,
        reason=reason,
        contract=contract.code,
        level=contract.level,
        tier=contract.tier.value,
        zone=contract.zone.value if contract.zone else None,
        billable=not under_warranty,
        warranty_until=contract.warranty_until,
        dedicated_engineer=contract.dedicated_engineer,
        region=contract.region,
    )
