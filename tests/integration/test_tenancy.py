"""Customers isolated from each other: integration key A (customer 汉中电力) cannot see,
list, change or subscribe to customer B's (宝鸡钛业) tickets, contracts, reports or
webhooks, by any route, filter or the global feed; and nothing it tries is recorded."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.settings import ROOT, Settings
from tests.keys import bearer

A, B = "C-汉中电力", "宝鸡钛业股份有限公司"  # the customers of K-2026-017 and K-BJ-2025-004
CONTRACT_OF_B = "K-BJ-2025-004"


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    settings = Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml",
                        webhook_allowed_hosts=("127.0.0.1",), secret_key="y" * 43 + "=")
    parts = intake(settings, clock=clock)
    yield parts
    parts.close()


def client(service: Intake, customer: str) -> TestClient:
    return TestClient(service.app, headers=bearer(service.gate.keyring, "integration", f"portal-{customer}",
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

    assert [w["id"] for w in a.get("/v1/webhooks").json()["webhooks"]] == [mine["id"]]
    for other in (theirs, unlimited):
        assert a.get(f"/v1/webhooks/{other['id']}").status_code == 404
        assert a.get(f"/v1/webhooks/{other['id']}/deliveries").status_code == 404
        assert a.patch(f"/v1/webhooks/{other['id']}", json={"description": "mine now"}).status_code == 404
        assert a.post(f"/v1/webhooks/{other['id']}/rotate-secret").status_code == 404
        assert a.delete(f"/v1/webhooks/{other['id']}").status_code == 404
        assert admin.get(f"/v1/webhooks/{other['id']}").json()["version"] == 1  # untouched
