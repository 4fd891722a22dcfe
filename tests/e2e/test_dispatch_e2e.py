"""Dispatch with the product running as real processes (deploy/run.py: NATS from the
wheel, intake, relay, projector, SLA clock, dispatch), worked over HTTP.

The dispatch process runs its clock from Tuesday 2026-11-24 02:00 in Shanghai
(TICKETING_CLOCK_START), so the night rota is what decides, whenever the test runs."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.nats_server import free_port
from tests.product import Product, start_product

pytestmark = pytest.mark.e2e

NIGHT = "2026-11-24T02:00:00+08:00"
CONTRACT = {"customer": "C-汉中电力", "level": "premium", "valid_from": "2020-01-01", "valid_to": "2099-12-31",
            "warranty_until": "2099-12-31", "region": "汉中", "zone": "in_city"}
OUTAGE = {"severity": "P1", "channel": "monitoring", "customer": "C-汉中电力", "contract": "K-E2E-7X24",
          "site": {"city": "汉中"}, "device": {"model": "S5700-28C-EI", "serial": "SN-001"}, "summary": "核心交换机宕机"}


@pytest.fixture(params=["embedded-sqlite", "postgres"])
def product(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Product, str]]:
    port = free_port()
    database = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    product = start_product(tmp_path / "var", clock_start=NIGHT, dispatch_port=str(port), **database)
    yield product, f"http://127.0.0.1:{port}"
    assert product.stop() == 0, "".join(product.output)


def until(condition: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.01)
    pytest.fail("condition not met in time")


def test_a_night_p1_from_assignment_to_the_spare_unit_back_in_stock(product: tuple[Product, str]) -> None:
    running, dispatch_url = product
    api = httpx.Client(base_url=running.api, timeout=10, headers=running.admin)
    desk = httpx.Client(base_url=dispatch_url, timeout=10, headers=running.admin)
    until(lambda: _ready(desk), timeout=30)
    assert api.put("/v1/contracts/K-E2E-7X24", json=CONTRACT).status_code in (200, 201)

    opened_at = time.monotonic()
    ticket = api.post("/v1/tickets", json=OUTAGE).json()["id"]

    def lead() -> str | None:
        return desk.get(f"/v1/tickets/{ticket}/dispatch").json()["lead"]

    assert until(lead) == "E-013"  # 汉中's on-call engineer for Monday night
    assert time.monotonic() - opened_at < 1.0
    assigned = [e for e in api.get(f"/v1/tickets/{ticket}/events").json() if e["type"] == "ticket.engineer_assigned"]
    assert "on call (mon duty)" in assigned[0]["data"]["rules"]

    engineer = running.key("engineer", "E-013", engineer="E-013")
    assert desk.post(f"/v1/tickets/{ticket}/decline", json={"engineer": "E-013", "reason": "车辆故障"}, headers=engineer).status_code == 200
    assert until(lead) == "E-019"  # the next best: the back-up on call in the same city

    api.post(f"/v1/tickets/{ticket}/escalate", json={"level": "L2", "reason": "需要高级工程师支援"})
    staffing = until(lambda: (s := desk.get(f"/v1/tickets/{ticket}/dispatch").json())["engineers"][1:] and s)
    assert [(e["engineer"], e["role"], e["level"]) for e in staffing["engineers"]] == [("E-019", "lead", "L2"), ("E-020", "support", "L2")]

    engineer = running.key("engineer", "E-019", engineer="E-019")
    reservation = desk.post(f"/v1/tickets/{ticket}/spare-request",
                            json={"engineer": "E-019", "reason": "主控板烧毁,先行替换"}, headers=engineer).json()
    unit = reservation["reserved"]
    assert (unit, reservation["warehouse"]) == ("SP-HZ-001", "WH-HZ")
    for step, state in [("ship", "shipped"), ("install", "installed")]:
        assert desk.post(f"/v1/spare-units/{unit}/{step}", json={}).json()["state"] == state  # the warehouse's job
    for path, body in [("acknowledge", {"plan": "备机已安装"}), ("resolve", {"resolution": "备机替换,业务恢复"})]:
        assert api.post(f"/v1/tickets/{ticket}/{path}", json=body, headers=engineer).status_code == 200
    assert api.post(f"/v1/tickets/{ticket}/close", json={"note": "x"}).status_code == 409  # the loan is still out
    assert desk.post(f"/v1/spare-units/{unit}/return", json={"note": "原设备修复"}).json()["state"] == "returned"
    assert desk.post(f"/v1/spare-units/{unit}/restock", json={}).json()["state"] == "available"
    assert api.post(f"/v1/tickets/{ticket}/close", json={"note": "done"}).json()["status"] == "closed"

    until(lambda: all(desk.get(f"/v1/engineers/{e}").json()["load"] == 0 for e in ("E-019", "E-020")))
    stock = desk.get("/v1/stock", params={"model": "S5700-28C-EI", "warehouse": "WH-HZ"}).json()["stock"]
    assert stock[0]["available"] == 2


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False
