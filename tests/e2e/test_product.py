"""The product started the way `make run` starts it (real processes, real NATS from
the wheel), worked over HTTP like a monitoring system and an engineer would."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from tests.product import Product, start_product

pytestmark = pytest.mark.e2e
LIFECYCLE = {"ticket.opened", "sla.committed", "ticket.acknowledged", "ticket.engineer_arrived", "ticket.resolved",
             "ticket.confirmed", "ticket.closed"}


@pytest.fixture(params=["embedded-sqlite", "postgres"])
def product(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Product]:
    settings = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    product = start_product(tmp_path / "var", **settings)
    yield product
    assert product.stop() == 0, "".join(product.output)


async def ticket_messages(nats_url: str, ticket_id: str, expected: int, timeout: float = 15) -> list:
    """The ticket's lifecycle messages on the EVENTS stream, once `expected` of them are there."""
    client = await nats.connect(nats_url)
    js = client.jetstream()
    seen: list = []
    read = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                last = (await js.stream_info("EVENTS")).state.last_seq
            except nats.js.errors.NotFoundError:  # the relay creates it when it starts
                last = 0
            for seq in range(read + 1, last + 1):
                message = await js.get_msg("EVENTS", seq)
                body = json.loads(message.data)
                if body["subject"] == ticket_id and body["type"] in LIFECYCLE:
                    seen.append(message)
            read = last
            if len(seen) >= expected:
                return seen
            await asyncio.sleep(0.1)
        pytest.fail(f"only {len(seen)} of {expected} messages of ticket {ticket_id} reached the stream")
    finally:
        await client.close()


def wait_for(predicate, timeout: float = 10):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    pytest.fail("condition not met in time")


def test_a_ticket_from_report_to_closure(product: Product) -> None:
    api = httpx.Client(base_url=product.api, timeout=10, headers=product.key("integration", "zabbix", customers=["榆林能源化工有限公司"]))
    assert api.get("/readyz").json()["checks"] == {"store": True, "nats": True}
    incident = {
        "severity": "P1", "channel": "monitoring", "customer": "榆林能源化工有限公司", "contract": "K-YL-2026-006",
        "site": {"city": "榆林"},
        "summary": "SCADA 服务器宕机", "source": {"system": "zabbix", "reference": "evt-77"},
    }
    opened = api.post("/v1/tickets", json=incident, headers={"Idempotency-Key": "e2e-1"})
    assert opened.status_code == 201
    retried = api.post("/v1/tickets", json=incident, headers={"Idempotency-Key": "e2e-1"})
    assert retried.json()["id"] == opened.json()["id"]
    number = opened.json()["number"]
    engineer = product.key("agent", "hotline-7")
    for path, body in [
        ("acknowledge", {"plan": "on my way"}),
        ("arrive", {"engineer": "E-YL-01"}),
        ("resolve", {"resolution": "power supply replaced"}),
    ]:
        assert api.post(f"/v1/tickets/{number}/{path}", json=body, headers=engineer).status_code == 200
    assert api.post(f"/v1/tickets/{number}/confirm", json={"satisfaction": 5}).status_code == 200
    closed = api.post(f"/v1/tickets/{number}/close", json={"note": "done"}, headers=engineer)
    assert closed.json()["status"] == "closed"

    # Dispatch reacts to the ticket too (assignment); this test follows the lifecycle itself.
    history = [e for e in api.get(f"/v1/tickets/{number}/events").json() if e["type"] in LIFECYCLE]
    types = ["ticket.opened", "sla.committed", "ticket.acknowledged", "ticket.engineer_arrived", "ticket.resolved",
             "ticket.confirmed", "ticket.closed"]
    assert [e["type"] for e in history] == types
    response = next(t for t in opened.json()["sla"]["targets"] if t["target"] == "response")
    assert response["state"] == "running" and response["due_at"]

    ours = asyncio.run(ticket_messages(product.nats_url, opened.json()["id"], expected=len(types)))
    bodies = [json.loads(m.data) for m in ours]
    assert [b["type"] for b in bodies] == types
    assert [m.headers["Nats-Msg-Id"] for m in ours] == [e["id"] for e in history]
    assert [m.subject for m in ours] == [f"events.{t}" for t in types]
    assert all(b["specversion"] == "1.0" for b in bodies)

    listed = wait_for(lambda: api.get("/v1/tickets", params={"status": "closed"}).json()["tickets"])
    assert [t["number"] for t in listed] == [number]
