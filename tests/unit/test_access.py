"""The access rules, the key aggregate and the rate limiter, without any I/O."""
from __future__ import annotations

from datetime import datetime, timezone
from uuid import uuid4

import pytest

from shared.access import DISPATCH_ACTIONS, PERMISSIONS, TICKET_COMMANDS, Principal
from shared.domain.api_key import ApiKey, Role, digest, key_id
from shared.domain.errors import InvalidKey
from shared.domain.ticket import Ticket
from shared.rate_limit import RateLimits

AT = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
WHO = {"actor": {"kind": "admin", "id": "ops"}, "correlation_id": "c"}


def ticket(customer: str) -> Ticket:
    return Ticket.open(id=uuid4(), at=AT, number="T-2026-000001", request_digest="d", severity="P2", category="fault",
                       channel="api", customer=customer, contract=None, site={}, device={}, summary="s",
                       description="", contact={}, source={}, **WHO)


def test_a_key_is_found_by_its_digest_and_keeps_no_secret() -> None:
    key = ApiKey.issue("tk_secret", name="zabbix", role=Role.INTEGRATION, customers=("B", "A", "A"), at=AT, **WHO)
    assert key.id == key_id("tk_secret") and key.digest == digest("tk_secret") != "tk_secret"
    assert key.customers == ("A", "B")
    assert "tk_secret" not in repr(vars(key.collect_events()[0]))
    assert key.revoke(reason="leaked", at=AT, **WHO) and not key.active
    assert not key.revoke(reason="again", at=AT, **WHO)  # revoked once, for good


@pytest.mark.parametrize(("role", "customers", "engineer", "field"), [
    (Role.INTEGRATION, (), None, "customers"),
    (Role.AGENT, ("A",), None, "customers"),
    (Role.ENGINEER, (), None, "engineer"),
    (Role.ENGINEER, (), "not an id", "engineer"),
    (Role.ADMIN, (), "E-017", "engineer"),
])
def test_a_key_s_scope_fits_its_role(role: Role, customers: tuple[str, ...], engineer: str | None, field: str) -> None:
    with pytest.raises(InvalidKey) as refused:
        ApiKey.issue("s", name="k", role=role, customers=customers, engineer=engineer, at=AT, **WHO)
    assert refused.value.field == field


def test_key_names_become_actor_ids_so_they_hold_no_colon_or_control_characters() -> None:
    for name in ("a:b", " lead", "x\x00", "", "n" * 201):
        with pytest.raises(InvalidKey):
            ApiKey.issue("s", name=name, role=Role.AGENT, at=AT, **WHO)


def test_scope_integration_sees_its_customers_engineer_the_tickets_it_is_on() -> None:
    ours, theirs = ticket("A"), ticket("B")
    integration = Principal(uuid4(), "portal", Role.INTEGRATION, frozenset({"A"}))
    assert integration.sees(ours) and not integration.sees(theirs)
    assert integration.actor["kind"] == "client"
    engineer = Principal(uuid4(), "E-017", Role.ENGINEER, engineer="E-017")
    assert not engineer.sees(ours)
    assert engineer.serves("B")  # customers do not limit an engineer: assignments do
    agent = Principal(uuid4(), "desk", Role.AGENT)
    assert agent.sees(ours) and agent.sees(theirs)


def test_permissions_name_real_commands_and_admin_may_do_everything() -> None:
    named = {p.split(":")[1] for ps in PERMISSIONS.values() for p in ps if p.split(":")[0] in ("tickets", "dispatch")}
    assert named <= set(TICKET_COMMANDS) | set(DISPATCH_ACTIONS) | {"open", "read"}
    assert set(TICKET_COMMANDS) <= set(dir(Ticket))
    assert all(PERMISSIONS[Role.ADMIN] >= granted for granted in PERMISSIONS.values())
    assert not any(p.endswith(("write", "manage", "move", "open")) or p.startswith(("tickets:", "dispatch:"))
                   for p in PERMISSIONS[Role.AUDITOR] - {"tickets:read"})


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    limits = RateLimits(rate=2, burst=4, clock=lambda: now[0])
    assert [limits.take("k") for _ in range(4)] == [0, 0, 0, 0]
    assert limits.take("k") == pytest.approx(0.5)  # half a second until the next token
    assert limits.take("other") == 0  # each key has its own bucket
    now[0] = 0.5
    assert limits.take("k") == 0
    assert [limits.take("fast", rate=20) for _ in range(41)].count(0) == 40  # its own rate scales its burst
    assert RateLimits(rate=0, burst=1).take("k") == 0  # 0: unlimited
