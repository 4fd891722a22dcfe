"""The intake API over HTTP (in-process ASGI), on SQLite and PostgreSQL: every endpoint,
idempotent opening under concurrency, problem bodies, and that a refused request
records nothing."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.settings import Settings
from tests.keys import bearer, recorded

INCIDENT = {
    "severity": "P1",
    "category": "fault",
    "channel": "monitoring",
    "customer": "C-汉中电力",
    "contract": "K-2026-017",
    "site": {"city": "汉中", "region": "陕南"},
    "device": {"model": "S5700", "serial": "SN-001"},
    "summary": "核心交换机宕机",
    "description": "all uplinks down since 16:55",
    "contact": {"name": "王工", "phone": "13800000000"},
    "source": {"system": "zabbix", "reference": "evt-9001"},
}


CONTRACT = {
    "customer": "C-汉中电力", "level": "premium", "valid_from": "2026-01-01", "valid_to": "2026-12-31",
    "warranty_until": "2026-12-31", "region": "汉中", "zone": "in_city",
}


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url), clock=clock)
    parts.contracts.put("K-2026-017", CONTRACT, actor={"kind": "agent", "id": "admin"}, correlation_id="setup")
    yield parts
    parts.close()


def event_count(service: Intake) -> int:
    """Events recorded since the fixture registered its contract (API keys aside)."""
    return recorded(service.desk.store) - 1


async def open_ticket(api: httpx.AsyncClient, **changes: object) -> dict:
    response = await api.post("/v1/tickets", json=INCIDENT | changes)
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status and body["detail"]
    return body


async def test_open_returns_the_ticket_and_its_location(api: httpx.AsyncClient, service: Intake) -> None:
    zabbix = bearer(service.gate.keyring, "integration", "zabbix", customers=("C-汉中电力",))
    response = await api.post("/v1/tickets", json=INCIDENT, headers={"X-Correlation-Id": "corr-1"} | zabbix)
    assert response.status_code == 201
    ticket = response.json()
    assert response.headers["location"] == f"/v1/tickets/{ticket['id']}"
    assert response.headers["x-correlation-id"] == "corr-1"
    assert ticket["number"] == "T-2026-000001"
    assert ticket["status"] == "open" and ticket["severity"] == "P1" and ticket["site"]["city"] == "汉中"
    assert ticket["received_at"] == "2026-11-20T09:00:00Z"
    history = (await api.get(f"/v1/tickets/{ticket['id']}/events")).json()
    assert history[0]["type"] == "ticket.opened"
    assert (history[0]["actor"]["kind"], history[0]["actor"]["id"]) == ("client", "zabbix")
    assert history[0]["correlation_id"] == "corr-1"
    assert history[0]["data"]["summary"] == "核心交换机宕机"


async def test_a_retried_post_returns_the_stored_response(api: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "retry-1"}
    first = await api.post("/v1/tickets", json=INCIDENT, headers=headers)
    await api.post(f"/v1/tickets/{first.json()['id']}/acknowledge", json={"plan": "remote"})
    again = await api.post("/v1/tickets", json=INCIDENT, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = await api.post("/v1/tickets", json=INCIDENT | {"summary": "something else"}, headers=headers)
    body = assert_problem(other, 422, "idempotency-key-reused")
    assert body["errors"][0]["field"] == "Idempotency-Key"


async def test_source_reference_deduplicates_without_a_key(api: httpx.AsyncClient) -> None:
    first = await open_ticket(api)
    again = await api.post("/v1/tickets", json=INCIDENT)
    assert again.json()["id"] == first["id"]
    other = await api.post("/v1/tickets", json=INCIDENT | {"summary": "changed"})
    assert assert_problem(other, 422, "idempotency-key-reused")["errors"][0]["field"] == "source.reference"
    no_reference = INCIDENT | {"source": {"system": "zabbix"}}
    a, b = (await api.post("/v1/tickets", json=no_reference)), (await api.post("/v1/tickets", json=no_reference))
    assert a.json()["id"] != b.json()["id"]


async def test_twenty_concurrent_identical_posts_make_one_ticket(api: httpx.AsyncClient, service) -> None:
    headers = {"Idempotency-Key": "storm-42"}
    responses = await asyncio.gather(*(api.post("/v1/tickets", json=INCIDENT, headers=headers) for _ in range(20)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    assert event_count(service) == 3  # the ticket's Opened, its SLA commitment, and its number


async def test_full_lifecycle_is_recorded_in_order(api: httpx.AsyncClient, clock: FakeClock) -> None:
    ticket = await open_ticket(api)
    steps = [
        ("acknowledge", {"plan": "engineer dispatched, ETA 90 min"}),
        ("comments", {"text": "customer reports fans alarm", "public": True}),
        ("severity", {"severity": "P2", "reason": "one uplink back"}),
        ("await-customer", {"reason": "waiting for the machine room key"}),
        ("customer-response", {"message": "key available"}),
        ("arrive", {"engineer": "E-017"}),
        ("resolve", {"resolution": "replaced supervisor card", "cause": "card failure"}),
        ("confirm", {"satisfaction": 5, "comment": "很好"}),
        ("close", {"note": "confirmed by phone"}),
    ]
    for path, body in steps:
        clock.advance(minutes=5)
        response = await api.post(f"/v1/tickets/{ticket['number']}/{path}", json=body)
        assert response.status_code == 200, (path, response.text)
    final = (await api.get(f"/v1/tickets/{ticket['number']}")).json()
    assert final["status"] == "closed" and final["severity"] == "P2" and final["satisfaction"] == 5
    assert final["version"] == 12
    history = (await api.get(f"/v1/tickets/{ticket['id']}/events")).json()
    assert [e["type"] for e in history] == [
        "ticket.opened", "sla.committed", "ticket.acknowledged", "ticket.commented", "ticket.severity_changed",
        "sla.committed", "ticket.awaiting_customer", "ticket.customer_responded", "ticket.engineer_arrived",
        "ticket.resolved", "ticket.confirmed", "ticket.closed",
    ]
    assert [e["version"] for e in history] == list(range(1, 13))
    assert history[4]["data"] == {"previous": "P1", "severity": "P2", "reason": "one uplink back"}
    assert history[5]["data"]["reason"] == "severity changed to P2"
    assert (history[2]["actor"]["kind"], history[2]["actor"]["id"]) == ("admin", "ops")
    assert history[-1]["recorded_at"] == "2026-11-20T09:45:00Z"
    as_acknowledged = (await api.get(f"/v1/tickets/{ticket['id']}", params={"version": 3})).json()
    assert as_acknowledged["status"] == "acknowledged" and as_acknowledged["severity"] == "P1"


async def test_reopen_and_cancel(api: httpx.AsyncClient) -> None:
    ticket = await open_ticket(api)
    for path, body in [("acknowledge", {"plan": "p"}), ("resolve", {"resolution": "r"}), ("reopen", {"reason": "again"})]:
        assert (await api.post(f"/v1/tickets/{ticket['id']}/{path}", json=body)).status_code == 200
    reopened = (await api.post(f"/v1/tickets/{ticket['id']}/cancel", json={"reason": "duplicate"})).json()
    assert reopened["status"] == "cancelled" and reopened["reopen_count"] == 1


async def test_illegal_transitions_and_conflicts_are_409(api: httpx.AsyncClient) -> None:
    ticket = await open_ticket(api)
    assert_problem(await api.post(f"/v1/tickets/{ticket['id']}/resolve", json={"resolution": "r"}), 409, "illegal-transition")
    await api.post(f"/v1/tickets/{ticket['id']}/acknowledge", json={"plan": "p"})
    assert_problem(await api.post(f"/v1/tickets/{ticket['id']}/acknowledge", json={"plan": "p"}), 409, "already-acknowledged")
    stale = await api.post(f"/v1/tickets/{ticket['id']}/comments", json={"text": "t", "expected_version": 2})
    assert assert_problem(stale, 409, "version-conflict")["detail"] == "expected version 2, ticket is at version 3"
    fresh = await api.post(f"/v1/tickets/{ticket['id']}/comments", json={"text": "t", "expected_version": 3})
    assert fresh.json()["version"] == 4


async def test_unknown_ticket_is_404(api: httpx.AsyncClient) -> None:
    for path in ("/v1/tickets/T-2026-999999", "/v1/tickets/nope/events", "/v1/tickets/00000000-0000-4000-8000-000000000000"):
        assert_problem(await api.get(path), 404, "ticket-not-found")
    assert_problem(await api.post("/v1/tickets/T-2026-000404/acknowledge", json={"plan": "p"}), 404, "ticket-not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (INCIDENT | {"severity": "P9"}, "severity"),
        ({k: v for k, v in INCIDENT.items() if k != "customer"}, "customer"),
        (INCIDENT | {"summary": ""}, "summary"),
        (INCIDENT | {"summary": "x" * 201}, "summary"),
        (INCIDENT | {"site": {"city": "汉中", "zone": "moon"}}, "site.zone"),
        (INCIDENT | {"colour": "red"}, "colour"),
        (INCIDENT | {"channel": "pigeon"}, "channel"),
    ],
)
async def test_bad_input_is_422_naming_the_field_and_records_nothing(api, service, body, field) -> None:
    response = await api.post("/v1/tickets", json=body)
    problem = assert_problem(response, 422, "invalid-request")
    assert field in [e["field"] for e in problem["errors"]]
    assert event_count(service) == 0


async def test_malformed_bodies_and_headers_are_4xx_and_record_nothing(api, service) -> None:
    invalid_utf8 = await api.post("/v1/tickets", content=b'{"summary": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert_problem(invalid_utf8, 400, "malformed-request")
    cases = [
        await api.post("/v1/tickets", content=b"{not json", headers={"content-type": "application/json"}),
        await api.post("/v1/tickets", json=[1, 2, 3]),
        await api.post("/v1/tickets", json=INCIDENT, headers={"Idempotency-Key": "k" * 256}),
    ]
    for response in cases:
        assert_problem(response, 422, "invalid-request")
    assert event_count(service) == 0
    ticket = await open_ticket(api)
    bad_commands = [
        ("confirm", {"satisfaction": 9}),
        ("acknowledge", {}),
        ("acknowledge", {"plan": "p", "expected_version": 0}),
        ("severity", {"severity": "P2"}),
    ]
    for path, body in bad_commands:
        assert_problem(await api.post(f"/v1/tickets/{ticket['id']}/{path}", json=body), 422, "invalid-request")
    assert (await api.get(f"/v1/tickets/{ticket['id']}")).json()["version"] == 2


async def test_global_feed_pages_with_stable_positions(api: httpx.AsyncClient) -> None:
    first = await open_ticket(api)
    second = await open_ticket(api, source={"system": "zabbix", "reference": "evt-2"})
    await api.post(f"/v1/tickets/{first['id']}/acknowledge", json={"plan": "p"})
    page = (await api.get("/v1/events", params={"limit": 4})).json()
    rest = (await api.get("/v1/events", params={"after": page["next_after"]})).json()
    events = [e for e in page["events"] + rest["events"] if e["type"] != "apikey.issued"]  # the test's own key
    assert [(e["stream_id"], e["type"]) for e in events] == [
        (events[0]["stream_id"], "contract.registered"),
        (first["id"], "ticket.opened"), (first["id"], "sla.committed"),
        (second["id"], "ticket.opened"), (second["id"], "sla.committed"),
        (first["id"], "ticket.acknowledged"),
    ]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 6
    assert (await api.get("/v1/events", params={"after": rest["next_after"]})).json()["events"] == []


async def test_ticket_list_filters_and_pages(api: httpx.AsyncClient, service, clock: FakeClock) -> None:
    tickets = []
    for i, (severity, customer) in enumerate([("P1", "A"), ("P2", "A"), ("P1", "B")]):
        clock.advance(minutes=1)
        tickets.append(await open_ticket(api, severity=severity, customer=customer, source={"system": "s", "reference": str(i)}))
    await api.post(f"/v1/tickets/{tickets[0]['id']}/acknowledge", json={"plan": "p"})
    while service.ticket_list.catch_up():
        pass
    listed = (await api.get("/v1/tickets")).json()
    assert [t["number"] for t in listed["tickets"]] == [t["number"] for t in reversed(tickets)]
    assert listed["total"] == 3
    p1_of_a = (await api.get("/v1/tickets", params={"severity": "P1", "customer": "A"})).json()["tickets"]
    assert [(t["number"], t["status"]) for t in p1_of_a] == [(tickets[0]["number"], "acknowledged")]
    open_ones = (await api.get("/v1/tickets", params={"status": "open", "limit": 1, "offset": 1})).json()
    assert open_ones["total"] == 2 and [t["number"] for t in open_ones["tickets"]] == [tickets[1]["number"]]
    assert_problem(await api.get("/v1/tickets", params={"status": "sleeping"}), 422, "invalid-request")


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] is True


async def test_openapi_documents_every_command(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    for command in ("acknowledge", "comments", "severity", "await-customer", "customer-response", "arrive",
                    "resolve", "confirm", "reopen", "close", "cancel"):
        assert f"/v1/tickets/{{reference}}/{command}" in paths
    assert (await api.get("/docs")).status_code == 200
