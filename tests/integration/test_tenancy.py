"""Customers isolated from each other: integration key A (customer 汉中电力) cannot see,
list, change or subscribe to customer B's (宝鸡钛业) tickets, contracts, reports or
webhooks, by any route of either service, filter or the global feed; and nothing it
tries is recorded. Likewise an engineer's key reaches only the tickets that engineer
is on. (That A's webhook gets none of B's events is in test_webhook_delivery.py,
where the notifier runs.)"""
from __future__ import annotations

from uuid import UUID

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.dispatch.wiring import Dispatch
from shared.bootstrap import Intake
from shared.settings import ROOT, Settings
from tests.keys import bearer, recorded

A, B = "C-汉中电力", "宝鸡钛业股份有限公司"  # the customers of K-2026-017 and K-BJ-2025-004
CONTRACT_OF_B = "K-BJ-2025-004"
REDELIVER = {"since": "2026-11-01T00:00:00Z"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml",
                    webhook_allowed_hosts=("127.0.0.1",), secret_key="y" * 43 + "=")


def client(service: Intake, customer: str, app: FastAPI | None = None) -> TestClient:
    """A client of `app` (default: the intake API) holding an integration key for `customer`."""
    return TestClient(app or service.app, headers=bearer(service.gate.keyring, "integration", f"portal-{customer}",
                                                         customers=(customer,)))


def incident(customer: str, **changes: object) -> dict:
    return {"severity": "P2", "customer": customer, "summary": "服务器故障"} | changes


def test_key_a_cannot_reach_b_s_tickets_by_any_route(service: Intake) -> None:
    a, b = client(service, A), client(service, B)
    mine = a.post("/v1/tickets", json=incident(A)).json()
    theirs = b.post("/v1/tickets", json=incident(B)).json()
    before = b.get(f"/v1/tickets/{theirs['id']}").json()["version"]

    for reference in (theirs["id"], theirs["number"]):
        for path in ("", "/events", "/timeline", "/report", "/verify"):
            answer = a.get(f"/v1/tickets/{reference}{path}")
            assert (answer.status_code, answer.json()["type"]) == (404, "/problems/ticket-not-found"), path
        for path, body in [("comments", {"text": "看看"}), ("cancel", {"reason": "x"}), ("confirm", {})]:
            assert a.post(f"/v1/tickets/{reference}/{path}", json=body).status_code == 404
    assert b.get(f"/v1/tickets/{theirs['id']}").json()["version"] == before  # nothing recorded on B's ticket

    service.ticket_list.catch_up()
    assert [t["id"] for t in a.get("/v1/tickets").json()["tickets"]] == [mine["id"]]
    assert a.get("/v1/tickets", params={"customer": B}).json()["total"] == 0

    streams = {e["stream_id"] for e in a.get("/v1/events", params={"limit": 1000}).json()["events"]}
    assert streams == {mine["id"]}  # not B's ticket, nor contracts, nor keys
    assert a.get("/v1/events", params={"customer": B}).json()["events"] == []
    assert a.get("/v1/events", params={"ticket": theirs["number"]}).status_code == 404


def test_key_a_cannot_reach_b_s_tickets_on_the_dispatch_service(service: Intake, dispatching: Dispatch) -> None:
    a, b = client(service, A, dispatching.app), client(service, B)
    mine = client(service, A).post("/v1/tickets", json=incident(A)).json()
    theirs = b.post("/v1/tickets", json=incident(B)).json()
    assert a.get(f"/v1/tickets/{mine['id']}/dispatch").status_code == 200  # A's key is good on dispatch
    before = recorded(service.desk.store)

    for reference in (theirs["id"], theirs["number"]):
        for answer in (a.get(f"/v1/tickets/{reference}/dispatch"),
                       a.post(f"/v1/tickets/{reference}/complaint", json={"reason": "工程师态度差"})):
            assert (answer.status_code, answer.json()["type"]) == (404, "/problems/ticket-not-found")
    assert recorded(service.desk.store) == before


def test_an_engineer_key_reaches_only_the_tickets_its_engineer_is_on(service: Intake, dispatching: Dispatch) -> None:
    keyring = service.gate.keyring
    admin = TestClient(service.app, headers=bearer(keyring, "admin"))
    ticket = admin.post("/v1/tickets", json=incident(A, site={"city": "汉中"}, device={"model": "S5700-28C-EI"})).json()
    dispatching.dispatcher.react(UUID(ticket["id"]), 1, "ticket.opened", "tests")  # as the dispatch worker would
    lead = dispatching.tickets.get(ticket["id"]).lead_engineer
    assert lead not in (None, "E-001")  # a 汉中 engineer; E-001 is at the head office (西安)
    on_it = TestClient(service.app, headers=bearer(keyring, "engineer", engineer=lead))
    stranger = TestClient(service.app, headers=bearer(keyring, "engineer", engineer="E-001"))
    before = recorded(service.desk.store)

    service.ticket_list.catch_up()
    assert [t["id"] for t in on_it.get("/v1/tickets").json()["tickets"]] == [ticket["id"]]
    listed = stranger.get("/v1/tickets").json()
    assert (listed["tickets"], listed["total"]) == ([], 0)
    assert stranger.get("/v1/tickets", params={"engineer": lead}).json()["total"] == 0
    refused = [stranger.get(f"/v1/tickets/{ticket['number']}")]
    refused += [stranger.post(f"/v1/tickets/{ticket['id']}/{path}", json=body)
                for path, body in [("acknowledge", {"plan": "马上到"}), ("resolve", {"resolution": "已修复"}), ("close", {})]]
    for answer in refused:
        assert (answer.status_code, answer.json()["type"]) == (404, "/problems/ticket-not-found")
    assert recorded(service.desk.store) == before
    assert on_it.post(f"/v1/tickets/{ticket['id']}/acknowledge", json={"plan": "马上到"}).status_code == 200


def test_key_a_cannot_open_for_b_nor_borrow_b_s_contract_or_idempotency_key(service: Intake) -> None:
    a, b = client(service, A), client(service, B)
    refused = a.post("/v1/tickets", json=incident(B))
    assert (refused.status_code, refused.json()["type"]) == (403, "/problems/forbidden")
    assert "customer" in refused.json()["detail"]
    assert b.get("/v1/tickets").json()["total"] == 0  # nothing recorded for B

    borrowed = a.post("/v1/tickets", json=incident(A, contract=CONTRACT_OF_B)).json()
    assert (borrowed["sla"]["committed"], borrowed["sla"]["reason"]) == (False, f"unknown contract {CONTRACT_OF_B}")
    quote = a.post("/v1/sla/quote", json={"severity": "P1", "contract": CONTRACT_OF_B}).json()
    assert (quote["committed"], quote["reason"]) == (False, f"unknown contract {CONTRACT_OF_B}")

    theirs = b.post("/v1/tickets", json=incident(B), headers={"Idempotency-Key": "evt-1"}).json()
    mine = a.post("/v1/tickets", json=incident(A), headers={"Idempotency-Key": "evt-1"})
    assert mine.status_code == 201 and mine.json()["id"] != theirs["id"] and "Idempotent-Replayed" not in mine.headers


def test_key_a_cannot_read_b_s_contracts_or_reports(service: Intake) -> None:
    a = client(service, A)
    assert a.get("/v1/contracts/K-2026-017").status_code == 200
    assert a.get(f"/v1/contracts/{CONTRACT_OF_B}").status_code == 404
    assert a.get("/v1/contracts", params={"customer": B}).status_code == 403
    assert a.get("/v1/reports/sla", params={"customer": B, "month": "2026-11"}).status_code == 403


def test_key_a_cannot_subscribe_to_or_touch_b_s_webhooks(service: Intake) -> None:
    a = client(service, A)
    admin = TestClient(service.app, headers=bearer(service.gate.keyring, "admin"))
    hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    refused = a.post("/v1/webhooks", json=hook | {"filters": {"customers": [A, B]}})
    assert (refused.status_code, refused.json()["type"]) == (403, "/problems/forbidden")
    mine = a.post("/v1/webhooks", json=hook).json()
    assert mine["filters"]["customers"] == [A]  # limited to A's own, though it named none
    widened = a.patch(f"/v1/webhooks/{mine['id']}", json={"filters": {"customers": [B]}})
    assert widened.status_code == 403
    unlimited = admin.post("/v1/webhooks", json=hook).json()  # every customer: not A's to see
    theirs = admin.post("/v1/webhooks", json=hook | {"filters": {"customers": [B]}}).json()
    before = recorded(service.desk.store)

    assert [w["id"] for w in a.get("/v1/webhooks").json()["webhooks"]] == [mine["id"]]
    for other in (theirs, unlimited):
        assert a.get(f"/v1/webhooks/{other['id']}").status_code == 404
        assert a.get(f"/v1/webhooks/{other['id']}/deliveries").status_code == 404
        assert a.patch(f"/v1/webhooks/{other['id']}", json={"description": "mine now"}).status_code == 404
        assert a.post(f"/v1/webhooks/{other['id']}/rotate-secret").status_code == 404
        for step in ("pause", "resume"):
            assert a.post(f"/v1/webhooks/{other['id']}/{step}").status_code == 404
        assert a.post(f"/v1/webhooks/{other['id']}/redeliver", json=REDELIVER).status_code == 404
        assert a.delete(f"/v1/webhooks/{other['id']}").status_code == 404
        assert admin.get(f"/v1/webhooks/{other['id']}").json()["version"] == 1  # untouched
    assert recorded(service.desk.store) == before
    assert a.post(f"/v1/webhooks/{mine['id']}/redeliver", json=REDELIVER).status_code == 202  # on A's own: taken
