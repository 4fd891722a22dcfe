"""The webhooks API as a subscriber or an operator uses it, on SQLite and PostgreSQL:
subscribe (the secret shown once), list, update, pause and resume, delete, rotate the
secret; problems for unknown ids, bad input and refused destinations, none of which
records anything. Host names resolve through a stand-in resolver: no DNS, no traffic."""
from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from uuid import UUID, uuid4

import httpx
import pytest
from cryptography.fernet import Fernet

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.domain.webhook import IPAddress, Webhook, parse_address
from shared.settings import Settings
from shared.webhooks import Webhooks, resolve

NAMES = {
    "hooks.example.com": ["93.184.215.14"],
    "rebind.example.com": ["10.1.2.3"],
    "partly.example.com": ["93.184.215.14", "192.168.1.5"],
}


def stand_in_resolver(host: str, port: int) -> list[IPAddress]:
    if host in NAMES:
        return [parse_address(a) for a in NAMES[host]]
    return resolve(host, port) if host[0].isdigit() or ":" in host else []  # literals only


@pytest.fixture
def webhooks(service: Intake) -> Webhooks:
    return service.webhooks


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    settings = Settings(database_url=database_url, secret_key=Fernet.generate_key().decode(),
                        webhook_allowed_hosts="127.0.0.1")
    parts = intake(settings, clock=clock)
    parts.webhooks.resolver = stand_in_resolver
    yield parts
    parts.close()


def recorded(service: Intake) -> int:
    return service.desk.store.recorder.max_notification_id() or 0


def assert_problem(response: httpx.Response, status: int, slug: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


HOOK = {"url": "https://hooks.example.com/ticketing", "event_types": ["ticket.escalated", "sla.*"]}


async def create(api: httpx.AsyncClient, **changes: object) -> dict:
    response = await api.post("/v1/webhooks", json=HOOK | changes)
    assert response.status_code == 201, response.text
    return response.json()


async def test_subscribing_returns_the_secret_once_and_stores_it_sealed(
    api: httpx.AsyncClient, service: Intake, webhooks: Webhooks
) -> None:
    response = await api.post("/v1/webhooks", json=HOOK | {
        "filters": {"severities": ["P1", "P2"], "regions": ["陕南"]}, "description": "R&D on-call"})
    assert response.status_code == 201
    created = response.json()
    assert response.headers["Location"] == f"/v1/webhooks/{created['id']}"
    assert created["secret"].startswith("whsec_") and len(base64.b64decode(created["secret"][6:])) == 32
    assert (created["status"], created["event_types"]) == ("active", ["sla.*", "ticket.escalated"])
    assert created["filters"] == {"customers": [], "severities": ["P1", "P2"], "regions": ["陕南"]}

    shown = (await api.get(f"/v1/webhooks/{created['id']}")).json()
    listed = (await api.get("/v1/webhooks")).json()["webhooks"]
    assert "secret" not in shown and all("secret" not in w for w in listed)
    assert shown == {k: v for k, v in created.items() if k != "secret"} == listed[0]

    # In the store: sealed, never in clear.
    stored = service.desk.store.recorder.select_notifications(0, 1000)
    assert not any(created["secret"].encode() in n.state for n in stored)
    subscribed = next(e for e in map(service.desk.store.decode, stored) if isinstance(e, Webhook.Subscribed))
    assert webhooks.box.open(subscribed.secret) == created["secret"]


async def test_list_update_pause_resume_delete(api: httpx.AsyncClient, service: Intake, clock: FakeClock) -> None:
    first = await create(api, description="branch manager")
    clock.advance(seconds=1)
    second = await create(api, description="customer's ticket system")
    listed = (await api.get("/v1/webhooks")).json()
    assert [w["id"] for w in listed["webhooks"]] == [second["id"], first["id"]] and listed["total"] == 2

    path = f"/v1/webhooks/{first['id']}"
    updated = await api.patch(path, json={"description": "分公司经理", "filters": {"customers": ["C-汉中电力"]}})
    assert updated.status_code == 200
    assert (updated.json()["description"], updated.json()["version"]) == ("分公司经理", 2)
    assert updated.json()["url"] == HOOK["url"]  # untouched terms stay
    before = recorded(service)
    assert (await api.patch(path, json={"description": "分公司经理"})).json()["version"] == 2
    assert recorded(service) == before  # nothing changed, nothing recorded

    paused = (await api.post(f"{path}/pause")).json()
    assert (paused["status"], (await api.post(f"{path}/pause")).json()["version"]) == ("paused", paused["version"])
    only_paused = (await api.get("/v1/webhooks", params={"status": "paused"})).json()["webhooks"]
    assert [w["id"] for w in only_paused] == [first["id"]]
    assert (await api.post(f"{path}/resume")).json()["status"] == "active"

    assert (await api.delete(path)).status_code == 204
    assert_problem(await api.get(path), 404, "webhook-not-found")
    assert_problem(await api.delete(path), 404, "webhook-not-found")
    assert [w["id"] for w in (await api.get("/v1/webhooks")).json()["webhooks"]] == [second["id"]]


async def test_an_update_names_the_version_it_expects(api: httpx.AsyncClient) -> None:
    webhook = await create(api)
    stale = await api.patch(f"/v1/webhooks/{webhook['id']}", json={"description": "x", "expected_version": 7})
    assert_problem(stale, 409, "webhook-version-conflict")
    fresh = await api.patch(f"/v1/webhooks/{webhook['id']}", json={"description": "x", "expected_version": 1})
    assert fresh.json()["version"] == 2


async def test_rotating_the_secret_keeps_the_old_one_signing_for_the_overlap(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    webhook = await create(api)
    rotated = await api.post(f"/v1/webhooks/{webhook['id']}/rotate-secret", json={"overlap_seconds": 3600})
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != webhook["secret"]
    expiry = (clock.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert rotated.json()["signing_secrets"] == [{"expires_at": expiry}, {"expires_at": None}]
    default = (await api.post(f"/v1/webhooks/{webhook['id']}/rotate-secret")).json()  # the service's overlap: a day
    assert [s["expires_at"] for s in default["signing_secrets"]][1:] == [
        (clock.now() + timedelta(days=1)).isoformat().replace("+00:00", "Z"), None]
    assert "secret" not in (await api.get(f"/v1/webhooks/{webhook['id']}")).json()


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud's metadata service
    "http://127.0.0.2:8080/",  # loopback, but only 127.0.0.1 is allow-listed
    "http://[::1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "https://rebind.example.com/hook",
    "https://partly.example.com/hook",  # one inward address is one too many
    "https://nowhere.example.com/hook",  # does not resolve
])
async def test_destinations_inside_are_refused_and_nothing_is_recorded(
    api: httpx.AsyncClient, service: Intake, url: str
) -> None:
    before = recorded(service)
    body = assert_problem(await api.post("/v1/webhooks", json=HOOK | {"url": url}), 422,
                          "webhook-destination-refused", "url")
    assert body["title"] and body["detail"].startswith("url: ")
    assert recorded(service) == before


async def test_changing_the_url_is_checked_too(api: httpx.AsyncClient, service: Intake) -> None:
    webhook = await create(api)
    before = recorded(service)
    refused = await api.patch(f"/v1/webhooks/{webhook['id']}", json={"url": "http://192.168.0.10/"})
    assert_problem(refused, 422, "webhook-destination-refused", "url")
    assert recorded(service) == before
    allowed = await api.patch(f"/v1/webhooks/{webhook['id']}", json={"url": "http://127.0.0.1:9000/hook"})
    assert allowed.json()["url"] == "http://127.0.0.1:9000/hook"


@pytest.mark.parametrize(("change", "field"), [
    ({"event_types": []}, "event_types"),
    ({"event_types": ["Ticket.Escalated"]}, "event_types.0"),
    ({"event_types": ["sla.*.breached"]}, "event_types.0"),
    ({"filters": {"severities": ["P9"]}}, "filters.severities.0"),
    ({"filters": {"colours": ["red"]}}, "filters.colours"),
    ({"url": "ftp://hooks.example.com/"}, "url"),
    ({"url": "https://user:pass@hooks.example.com/"}, "url"),
    ({"url": "https:///no-host"}, "url"),
    ({"url": None}, "url"),
    ({"description": "x" * 201}, "description"),
    ({"secret": "whsec_mine"}, "secret"),
])
async def test_bad_input_is_422_naming_the_field_and_records_nothing(
    api: httpx.AsyncClient, service: Intake, change: dict, field: str
) -> None:
    before = recorded(service)
    response = await api.post("/v1/webhooks", json=HOOK | change)
    assert response.status_code == 422 and field in [e["field"] for e in response.json()["errors"]], response.text
    assert recorded(service) == before


async def test_unknown_subscriptions_are_404(api: httpx.AsyncClient) -> None:
    path = f"/v1/webhooks/{uuid4()}"
    for response in [
        await api.get(path), await api.patch(path, json={"description": "x"}), await api.delete(path),
        await api.post(f"{path}/pause"), await api.post(f"{path}/resume"), await api.post(f"{path}/rotate-secret"),
        await api.get(f"{path}/deliveries"), await api.post(f"{path}/redeliver", json={"event_id": str(uuid4())}),
    ]:
        assert_problem(response, 404, "webhook-not-found")
    assert_problem(await api.get("/v1/webhooks/not-a-uuid"), 422, "invalid-request", "path.webhook_id")


async def test_redelivery_requests(api: httpx.AsyncClient, service: Intake, webhooks: Webhooks) -> None:
    webhook = await create(api)
    path = f"/v1/webhooks/{webhook['id']}/redeliver"
    before = recorded(service)
    assert_problem(await api.post(path, json={}), 422, "invalid-request", "event_id")
    assert_problem(await api.post(path, json={"event_id": str(uuid4()), "since": "2026-11-20T00:00:00Z"}),
                   422, "invalid-request", "event_id")
    assert_problem(await api.post(path, json={"since": "2026-11-20T00:00:00"}), 422, "invalid-request", "since")
    assert_problem(await api.post(path, json={"event_id": str(uuid4())}), 404, "delivery-not-found")
    assert recorded(service) == before

    accepted = await api.post(path, json={"since": "2026-11-20T08:00:00+08:00"})
    assert accepted.status_code == 202
    pending = webhooks.get(UUID(webhook["id"])).redeliveries
    assert list(pending) == [accepted.json()["request_id"]]
    assert pending[accepted.json()["request_id"]]["since"] == "2026-11-20T00:00:00+00:00"


async def test_subscription_changes_stay_off_the_bus_and_the_audit_feed(api: httpx.AsyncClient) -> None:
    webhook = await create(api)
    await api.post(f"/v1/webhooks/{webhook['id']}/pause")
    feed = (await api.get("/v1/events")).json()["events"]
    assert not [e for e in feed if e["type"].startswith("webhook.")]


async def test_the_delivery_log_starts_empty(api: httpx.AsyncClient) -> None:
    webhook = await create(api)
    log = (await api.get(f"/v1/webhooks/{webhook['id']}/deliveries")).json()
    assert log == {"deliveries": [], "total": 0, "limit": 50, "offset": 0}
