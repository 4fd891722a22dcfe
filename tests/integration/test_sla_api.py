"""SLA as an API user sees it: due instants returned at opening, target states on the
ticket, no commitment outside a contract, the quote a hotline agent gives, and the
policy in force as an auditor reads it."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.settings import ROOT, Settings
from tests.keys import bearer

ADMIN = {"actor": {"kind": "agent", "id": "admin"}, "correlation_id": "setup"}


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml"), clock=clock)
    yield parts
    parts.close()


def incident(**changes: object) -> dict:
    return {"severity": "P2", "customer": "陕西秦川数据科技有限公司", "contract": "K-XA-2025-002",
            "summary": "数据库无法连接", "site": {"city": "西安"}} | changes


def targets(ticket: dict) -> dict[str, dict]:
    return {t["target"]: t for t in ticket["sla"]["targets"]}


async def test_opening_returns_the_response_due_instant(api: httpx.AsyncClient) -> None:
    # The fixture clock: Friday 2026-11-20 17:00 Shanghai; a standard (5×8) P2.
    ticket = (await api.post("/v1/tickets", json=incident())).json()
    sla = ticket["sla"]
    assert (sla["committed"], sla["level"], sla["severity"], sla["billable"]) == (True, "standard", "P2", True)
    response = targets(ticket)["response"]
    assert response["due_at"] == "2026-11-23T01:00:00Z"  # Monday 09:00 Shanghai: one working hour
    assert (response["state"], response["calendar"], response["rule"]) == ("running", "cn-business", "table")
    assert response["policy_version"] == sla["policy_version"] and sla["policy_version"].startswith("2026.11+")
    assert response["warning_at"] == "2026-11-20T09:45:00Z"


async def test_target_states_move_with_the_ticket(api: httpx.AsyncClient, clock: FakeClock) -> None:
    ticket = (await api.post("/v1/tickets", json=incident())).json()
    clock.advance(minutes=20)
    acknowledged = (await api.post(f"/v1/tickets/{ticket['id']}/acknowledge", json={"plan": "远程排查"})).json()
    response = targets(acknowledged)["response"]
    assert (response["state"], response["met_at"], response["elapsed_seconds"]) == ("met", "2026-11-20T09:20:00Z", 1200)
    await api.post(f"/v1/tickets/{ticket['id']}/await-customer", json={"reason": "need logs"})
    clock.advance(days=3)
    paused = targets((await api.get(f"/v1/tickets/{ticket['id']}")).json())["resolution"]
    assert (paused["state"], paused["due_at"]) == ("paused", None)


async def test_no_contract_means_no_commitment_but_the_ticket_is_recorded(api: httpx.AsyncClient) -> None:
    baoji = "宝鸡钛业股份有限公司"
    for customer, contract, reason in [
        (baoji, None, "no contract given"), (baoji, "K-NOPE", "unknown contract K-NOPE"),
        (baoji, "K-BJ-2025-004", "contract K-BJ-2025-004 expired on 2026-06-30"),
        # Another customer's contract entitles nobody else, and its terms stay hidden.
        ("陕西秦川数据科技有限公司", "K-BJ-2025-004", "unknown contract K-BJ-2025-004"),
    ]:
        opened = await api.post("/v1/tickets", json=incident(customer=customer, contract=contract))
        assert opened.status_code == 201
        sla = opened.json()["sla"]
        assert (sla["committed"], sla["reason"], sla["targets"]) == (False, reason, [])
        history = (await api.get(f"/v1/tickets/{opened.json()['id']}/events")).json()
        assert [e["type"] for e in history] == ["ticket.opened", "sla.no_commitment"]
        assert history[1]["data"]["reason"] == reason


async def test_visit_request_and_manual_escalation(api: httpx.AsyncClient) -> None:
    ticket = (await api.post("/v1/tickets", json=incident(severity="P3"))).json()
    assert targets(ticket)["on_site"]["state"] == "not_applicable"
    visited = (await api.post(f"/v1/tickets/{ticket['id']}/visit-request", json={"reason": "需要现场更换硬盘"})).json()
    assert targets(visited)["on_site"]["state"] == "running"
    escalated = await api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L3", "reason": "客户投诉工程师"})
    assert escalated.json()["sla"]["escalation_level"] == "L3"
    again = await api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L2", "reason": "x"})
    assert again.status_code == 409
    history = (await api.get(f"/v1/tickets/{ticket['id']}/events")).json()
    assert history[-1]["type"] == "ticket.escalated" and history[-1]["data"]["trigger"] == "manual"


async def test_quote_by_level_and_by_contract(api: httpx.AsyncClient) -> None:
    by_level = (await api.post("/v1/sla/quote", json={"severity": "P1", "level": "premium",
                                                       "start": "2026-11-21T02:00:00+08:00"})).json()
    due = {t["target"]: t["due_at"] for t in by_level["targets"]}
    assert due == {"response": "2026-11-20T18:30:00Z", "on_site": "2026-11-20T20:00:00Z",
                   "resolution": "2026-11-22T18:00:00Z", "callback": None}
    vip = (await api.post("/v1/sla/quote", json={"severity": "P3", "contract": "K-XA-2026-001"})).json()
    assert (vip["severity"], vip["raised_by"], vip["on_site_owed"]) == ("P2", ["vip-priority"], True)
    expired = (await api.post("/v1/sla/quote", json={"severity": "P1", "contract": "K-BJ-2025-004"})).json()
    assert (expired["committed"], expired["reason"]) == (False, "contract K-BJ-2025-004 expired on 2026-06-30")
    bad = await api.post("/v1/sla/quote", json={"severity": "P1", "level": "gold"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "level"
    naive = await api.post("/v1/sla/quote", json={"severity": "P1", "level": "premium", "start": "2026-11-21T02:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "start"


async def test_the_policy_in_force_is_shown_as_data(api: httpx.AsyncClient, clock: FakeClock, tmp_path: Path) -> None:
    policy = (await api.get("/v1/policy")).json()
    ticket = (await api.post("/v1/tickets", json=incident())).json()
    assert policy["version"] == ticket["sla"]["policy_version"]  # the one every deadline names
    business, always = policy["calendars"]["cn-business"], policy["calendars"]["always"]
    assert (business["zone"], list(business["week"])) == ("Asia/Shanghai", ["mon", "tue", "wed", "thu", "fri"])
    assert business["week"]["mon"] == [["09:00", "12:00"], ["13:00", "18:00"]]
    assert business["holidays"]["override"] == "calendars/cn-holidays-override.toml"
    assert business["holidays"]["source"] == "holidays package" and 2026 in business["holidays"]["known_years"]
    assert always["week"] == {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    assert always["holidays"] is None
    assert policy["levels"] == {"standard": "cn-business", "premium": "always"}
    assert policy["targets"]["P1"] == {"response": 1800, "on_site": 7200, "resolution": 172800}
    assert "on_site" not in policy["targets"]["P4"]
    assert [r["name"] for r in policy["rules"]][:2] == ["vip-priority", "change-request-answer"]
    assert policy["rules"][1] | {"when": {"category": "change_request"}, "target": "response", "seconds": 57600,
                                 "calendar": "cn-business", "replaces_table": True} == policy["rules"][1]
    assert (policy["warning_ratio"], policy["rule_precedence"], policy["severity_change"]) == (0.75, "earliest", "retroactive")
    assert policy["escalation"]["on_breach"] == {"response": "L2", "on_site": "L3", "resolution": "L4", "callback": "L2"}
    assert policy["escalation"]["levels"]["L4"] == "expert panel and management"

    # Another file, after a restart: the endpoint shows that one.
    replaced = intake(Settings(data_dir=tmp_path, policy_file=ROOT / "tests" / "policies" / "seconds.toml"), clock=clock)
    try:
        other = TestClient(replaced.app, headers=bearer(replaced.gate.keyring, "auditor")).get("/v1/policy").json()
    finally:
        replaced.close()
    assert other["version"].startswith("test-seconds+") and other["levels"] == {"standard": "always", "premium": "always"}
    assert other["targets"]["P1"]["response"] == 4
    assert other["calendars"]["cn-business"]["holidays"]["override"] == "../../deploy/calendars/cn-holidays-override.toml"
