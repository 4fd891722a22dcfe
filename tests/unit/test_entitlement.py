"""Entitlement is a pure function: every reason for no commitment, the local-date
boundaries of validity and warranty, and what is billable."""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.domain.contract import Contract, Terms
from shared.domain.entitlement import entitlement

SHANGHAI = ZoneInfo("Asia/Shanghai")
TERMS = {
    "customer": "C-汉中电力",
    "level": "premium",
    "tier": "vip",
    "valid_from": date(2026, 1, 1),
    "valid_to": date(2026, 6, 30),
    "warranty_until": date(2026, 3, 31),
    "region": "陕南",
    "zone": "in_city",
    "dedicated_engineer": "E-017",
}


def contract(**changes: Any) -> Contract:
    return Contract.register(
        "K-1", Terms.of(TERMS | changes), at=datetime(2025, 12, 1, tzinfo=timezone.utc),
        actor={"kind": "service", "id": "test"}, correlation_id="c",
    )


def shanghai(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SHANGHAI)


def test_no_contract_given() -> None:
    result = entitlement(None, shanghai(2026, 5, 1, 10), contract_code=None)
    assert not result.committed and result.reason == "no contract given"
    assert result.contract is None and result.level is None and result.tier == "normal"
    assert result.billable


def test_unknown_contract() -> None:
    result = entitlement(None, shanghai(2026, 5, 1, 10), contract_code="K-9")
    assert not result.committed and result.reason == "unknown contract K-9"
    assert result.contract == "K-9" and result.billable and result.dedicated_engineer is None


def test_a_valid_contract_commits_on_its_terms() -> None:
    result = entitlement(contract(), shanghai(2026, 5, 1, 10), contract_code="K-1")
    assert result.committed and result.reason is None
    assert (result.contract, result.level, result.tier, result.zone) == ("K-1", "premium", "vip", "in_city")
    assert (result.region, result.dedicated_engineer) == ("陕南", "E-017")
    assert result.warranty_until == date(2026, 3, 31)


def test_not_yet_valid() -> None:
    result = entitlement(contract(valid_from=date(2027, 1, 1), valid_to=date(2027, 12, 31)),
                         shanghai(2026, 5, 1, 10), contract_code="K-1")
    assert not result.committed and result.reason == "contract K-1 not valid until 2027-01-01"


def test_expired_still_reports_the_terms() -> None:
    result = entitlement(contract(), shanghai(2026, 7, 1, 10), contract_code="K-1")
    assert not result.committed and result.reason == "contract K-1 expired on 2026-06-30"
    assert result.dedicated_engineer == "E-017" and result.level == "premium"


@pytest.mark.parametrize(
    ("at", "committed"),
    [
        (shanghai(2025, 12, 31, 23, 59, 59), False),  # 15:59:59 UTC, 31 Dec
        (datetime(2025, 12, 31, 16, 0, tzinfo=timezone.utc), True),  # 00:00 on 1 Jan in Shanghai
        (datetime(2026, 6, 30, 15, 30, tzinfo=timezone.utc), True),  # 23:30 on 30 Jun in Shanghai
        (datetime(2026, 6, 30, 16, 30, tzinfo=timezone.utc), False),  # 00:30 on 1 Jul: still 30 Jun in UTC
    ],
)
def test_validity_is_judged_on_the_local_date(at: datetime, committed: bool) -> None:
    assert entitlement(contract(), at, contract_code="K-1").committed is committed


def test_the_contracts_own_time_zone_decides() -> None:
    berlin = contract(time_zone="Europe/Berlin")
    # 23:30 in Berlin on 30 June is already 1 July in Shanghai, but Berlin's contract still holds.
    at = datetime(2026, 6, 30, 23, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert entitlement(berlin, at, contract_code="K-1").committed
    assert not entitlement(contract(), at, contract_code="K-1").committed


@pytest.mark.parametrize(
    ("at", "billable"),
    [
        (shanghai(2026, 3, 31, 23, 59), False),  # the warranty's last day, local time
        (datetime(2026, 3, 31, 16, 0, tzinfo=timezone.utc), True),  # 00:00 on 1 Apr in Shanghai
        (shanghai(2026, 5, 1, 10), True),
    ],
)
def test_warranty_decides_billable_on_the_local_date(at: datetime, billable: bool) -> None:
    assert entitlement(contract(), at, contract_code="K-1").billable is billable


def test_without_warranty_everything_is_billable() -> None:
    assert entitlement(contract(warranty_until=None), shanghai(2026, 1, 2, 10), contract_code="K-1").billable


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        entitlement(contract(), datetime(2026, 5, 1, 10), contract_code="K-1")


def test_the_contract_must_be_the_one_named() -> None:
    with pytest.raises(ValueError, match="K-2"):
        entitlement(contract(), shanghai(2026, 5, 1, 10), contract_code="K-2")
