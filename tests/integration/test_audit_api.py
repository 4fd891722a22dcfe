"""Audit over the API: a ticket as it stood at any instant, the filtered global feed,
the plain-words timeline and the incident report."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.settings import ROOT, Settings



@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml"), clock=clock)
    yield parts
    parts.close()


def incident(**changes: object) -> dict:
    # Premium (7×24) contract of 汉中电力; the fixture clock is 2026-11-20 17:00 Shanghai.
    return {"severity": "P2", "customer": "C-汉中电力", "contract": "K-2026-017", "summary": "交换机故障",
            "site": {"city": "汉中"}} | changes


async def worked_ticket(api: httpx.AsyncClient, clock: FakeClock) -> dict:
    ticket = (await api.post("/v1/tickets", json=incident())).json()
    clock.advance(minutes=18)
    await api.post(f"/v1/tickets/{ticket['id']}/acknowledge", json={"plan": "远程诊断"})
    clock.advance(minutes=12)
    await api.post(f"/v1/tickets/{ticket['id']}/severity", json={"severity": "P1", "reason": "全厂停产"})
    clock.advance(minutes=30)
    await api.post(f"/v1/tickets/{ticket['id']}/await-customer", json={"reason": "等待机房钥匙"})
    clock.advance(hours=2)
    await api.post(f"/v1/tickets/{ticket['id']}/customer-response", json={"message": "钥匙已到"})
    clock.advance(minutes=10)
    await api.post(f"/v1/tickets/{ticket['id']}/arrive", json={"engineer": "E-017"})
    clock.advance(hours=1)
    await api.post(f"/v1/tickets/{ticket['id']}/resolve", json={"resolution": "更换电源模块", "cause": "电源故障"})
    return ticket


async def test_state_as_of_any_instant(api: httpx.AsyncClient, clock: FakeClock) -> None:
    ticket = await worked_ticket(api, clock)
    at = lambda iso: api.get(f"/v1/tickets/{ticket['number']}", params={"as_of": iso})  # noqa: E731
    before_change = (await at("2026-11-20T09:20:00Z")).json()
    assert (before_change["status"], before_change["severity"], before_change["version"]) == ("acknowledged", "P2", 3)
    on_site = {t["target"]: t for t in before_change["sla"]["targets"]}["on_site"]
    assert on_site["due_at"] == "2026-11-20T13:00:00Z"  # P2: 4 h on a 7×24 calendar
    after_change = (await at("2026-11-20T09:31:00Z")).json()
    on_site = {t["target"]: t for t in after_change["sla"]["targets"]}["on_site"]
    assert (after_change["severity"], on_site["due_at"]) == ("P1", "2026-11-20T11:00:00Z")  # retroactive: 2 h from receipt
    paused = (await at("2026-11-20T11:00:00Z")).json()
    resolution = {t["target"]: t for t in paused["sla"]["targets"]}["resolution"]
    assert (paused["status"], resolution["state"], resolution["elapsed_seconds"]) == ("awaiting_customer", "paused", 3600)
    assert (await at("2026-11-20T08:59:59Z")).status_code == 404
    both = await api.get(f"/v1/tickets/{ticket['number']}", params={"as_of": "2026-11-20T09:20:00Z", "version": 2})
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "query.as_of"


async def test_a_version_not_yet_recorded_is_refused_naming_the_field(api: httpx.AsyncClient, clock: FakeClock) -> None:
    ticket = await worked_ticket(api, clock)  # 9 events, the last its resolution
    last = await api.get(f"/v1/tickets/{ticket['number']}", params={"version": 9})
    assert (last.status_code, last.json()["status"], last.json()["version"]) == (200, "resolved", 9)
    beyond = await api.get(f"/v1/tickets/{ticket['number']}", params={"version": 10})
    assert beyond.status_code == 422 and beyond.headers["content-type"] == "application/problem+json"
    assert beyond.json()["errors"] == [
        {"field": "query.version", "message": "version 10 not recorded; the ticket is at version 9"}
    ]


async def test_feed_filters_by_type_ticket_customer_and_time(api: httpx.AsyncClient, service: Intake, clock: FakeClock) -> None:
    first = await worked_ticket(api, clock)
    other = (await api.post("/v1/tickets", json=incident(customer="西安公交集团", contract="K-XA-2026-008"))).json()
    while service.ticket_list.catch_up():
        pass
    feed = lambda **params: api.get("/v1/events", params=params)  # noqa: E731
    sla = (await feed(type="sla.*")).json()["events"]
    assert {e["type"] for e in sla} == {"sla.committed"} and len(sla) == 3
    just_first = (await feed(ticket=first["number"])).json()["events"]
    assert {e["stream_id"] for e in just_first} == {first["id"]} and len(just_first) == 9
    by_customer = (await feed(customer="西安公交集团")).json()["events"]
    assert [e["type"] for e in by_customer] == ["ticket.opened", "sla.committed"]
    assert {e["stream_id"] for e in by_customer} == {other["id"]}
    window = (await feed(since="2026-11-20T09:30:00Z", until="2026-11-20T10:00:00Z")).json()["events"]
    assert [e["type"] for e in window] == ["ticket.severity_changed", "sla.committed"]
    page = (await feed(type=["ticket.acknowledged", "ticket.resolved"], limit=1)).json()
    rest = (await feed(type=["ticket.acknowledged", "ticket.resolved"], after=page["next_after"])).json()
    assert [e["type"] for e in page["events"] + rest["events"]] == ["ticket.acknowledged", "ticket.resolved"]


async def test_timeline_and_incident_report(api: httpx.AsyncClient, clock: FakeClock) -> None:
    ticket = await worked_ticket(api, clock)
    lines = (await api.get(f"/v1/tickets/{ticket['number']}/timeline")).json()
    texts = [line["text"] for line in lines]
    assert texts[0].startswith(f"opened {ticket['number']} (P2 fault) for C-汉中电力")
    assert texts[2] == "acknowledged by admin ops: 远程诊断 — response met 42 min before due"
    assert texts[3] == "severity P2 → P1 by admin ops: 全厂停产"
    # Due 11:00 UTC, but the two hours awaiting the customer do not count: due 13:00, met 12:10.
    assert texts[7] == "engineer E-017 on site — on-site met 50 min before due"
    report = (await api.get(f"/v1/tickets/{ticket['number']}/report")).json()
    outcome = {t["target"]: t["state"] for t in report["sla"]["targets"]}
    assert outcome == {"response": "met", "on_site": "met", "resolution": "met", "callback": "running"}
    assert (report["cause"], report["engineers"]) == ("电源故障", ["E-017"])
    markdown = await api.get(f"/v1/tickets/{ticket['number']}/report", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert f"# Incident report {ticket['number']}" in markdown.text
    assert "| on-site | met | 2026-11-20 21:00 | 2026-11-20 20:10 |" in markdown.text


async def test_history_pages_for_long_tickets(api: httpx.AsyncClient, clock: FakeClock) -> None:
    ticket = await worked_ticket(api, clock)
    first = (await api.get(f"/v1/tickets/{ticket['id']}/events", params={"limit": 4})).json()
    rest = (await api.get(f"/v1/tickets/{ticket['id']}/events", params={"after_version": 4})).json()
    assert [e["version"] for e in first] == [1, 2, 3, 4]
    assert [e["version"] for e in first + rest] == list(range(1, 10))


async def test_ticket_list_filters_on_region_escalation_breach_and_receipt(
    api: httpx.AsyncClient, service: Intake, clock: FakeClock
) -> None:
    quiet = (await api.post("/v1/tickets", json=incident(site={"city": "汉中", "region": "陕南"}))).json()
    clock.advance(hours=1)
    loud = (await api.post("/v1/tickets", json=incident(site={"city": "宝鸡", "region": "关中"}))).json()
    await api.post(f"/v1/tickets/{loud['id']}/escalate", json={"level": "L3", "reason": "客户投诉"})
    desk = service.desk
    ticket = desk.get(loud["id"])
    clock.advance(hours=2)  # past the P2 response target of 1 h (7×24)
    due = ticket.sla.clocks["response"]
    ticket.record_sla_alert(kind="breach", target="response", cycle=due.cycle, due_at=clock.now(), at=clock.now(),
                            actor={"kind": "service", "id": "sla_clock"}, correlation_id="t")
    desk.store.save(ticket)
    while service.ticket_list.catch_up():
        pass
    listed = lambda **params: api.get("/v1/tickets", params=params)  # noqa: E731
    numbers = lambda response: [t["number"] for t in response.json()["tickets"]]  # noqa: E731
    assert numbers(await listed(region="陕南")) == [quiet["number"]]
    assert numbers(await listed(escalation_level="L3")) == [loud["number"]]
    assert numbers(await listed(breached="true")) == [loud["number"]]
    assert numbers(await listed(breached="false")) == [quiet["number"]]
    assert numbers(await listed(received_from="2026-11-20T09:30:00Z")) == [loud["number"]]
    assert numbers(await listed(received_until="2026-11-20T09:30:00Z")) == [quiet["number"]]
