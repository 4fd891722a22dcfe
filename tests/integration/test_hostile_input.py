"""Hostile input: oversized and malformed bodies, NUL characters and lone surrogates,
huge headers, SQL and shell metacharacters in every string field, a key over its rate.
Each gets a clear 4xx problem (or, for text that is merely unusual, is stored exactly
as sent) and nothing half-written; and no key or webhook secret ever reaches the
store or the log. Ticket creation is tried field by field; every other kind of write
(a ticket command, contracts, keys, webhooks, engineers, spare units, a dispatch
action on a ticket) through one table of endpoints."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from services.dispatch.wiring import Dispatch
from shared.bootstrap import Intake
from shared.settings import Settings
from tests.keys import bearer, recorded

CUSTOMER = "C-汉中电力"
INCIDENT = {"severity": "P2", "customer": CUSTOMER, "summary": "交换机故障"}
HOSTILE = [
    "'; DROP TABLE ticketing_events; --",
    "\" OR 1=1 --",
    "$(rm -rf /) `reboot` | cat /etc/passwd && echo; ${IFS}",
    "<script>alert(1)</script>",
    "../../../../etc/passwd%00",
    "%s%s%s%n {0} {{7*7}}",
    "\u202e\ufeff\u200b 𠜎 🔥",
]


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Webhooks may point at loopback here, so a subscription really is made (and its secret issued).
    return Settings(database_url=database_url, max_body_bytes=64 * 1024, webhook_allowed_hosts=("127.0.0.1",),
                    secret_key="h" * 43 + "=")


@pytest.fixture
def api(service: Intake) -> TestClient:
    return TestClient(service.app, headers=bearer(service.gate.keyring, "admin", "ops"))


def assert_problem(answer, status: int, slug: str) -> dict:  # type: ignore[no-untyped-def]
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == f"/problems/{slug}"
    return answer.json()


def test_oversized_bodies_are_413_declared_or_streamed(api: TestClient, service: Intake) -> None:
    huge = INCIDENT | {"description": "x" * 70_000}
    assert_problem(api.post("/v1/tickets", json=huge), 413, "body-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(INCIDENT)[:-1].encode() + b', "description": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    assert_problem(api.post("/v1/tickets", content=chunks(), headers={"content-type": "application/json"}),
                   413, "body-too-large")
    assert recorded(service.desk.store) == 0


@pytest.mark.parametrize(("body", "status"), [
    (b'{"summary": "\xff\xfe"}', 400),  # invalid UTF-8
    (b"{not json", 422),
    (b"[1, 2, 3]", 422),
    (b"", 422),
    (b'{"severity": "P2", "customer": "C", "summary": "s", "summary": ' + b"9" * 5000 + b"}", 400),  # too long a number
])
def test_malformed_bodies_are_4xx(api: TestClient, service: Intake, body: bytes, status: int) -> None:
    answer = api.post("/v1/tickets", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status and answer.headers["content-type"] == "application/problem+json"
    assert recorded(service.desk.store) == 0


@pytest.mark.parametrize("field", ["customer", "summary", "description", "site.city", "contact.name", "source.system"])
@pytest.mark.parametrize("bad", ["a\x00b", "lone \ud800 surrogate"])
def test_text_no_store_can_hold_is_refused_naming_the_field(api: TestClient, service: Intake, field: str, bad: str) -> None:
    body = INCIDENT | {"site": {"city": "汉中"}, "contact": {"name": "王工"}, "source": {"system": "zabbix"}}
    outer, _, inner = field.partition(".")
    if inner:
        body[outer] = body[outer] | {inner: bad}
    else:
        body[outer] = bad
    raw = json.dumps(body, ensure_ascii=True)  # \u0000 and \ud800 as JSON escapes, as a client would send them
    answer = api.post("/v1/tickets", content=raw, headers={"content-type": "application/json"})
    problem = assert_problem(answer, 422, "invalid-request")
    assert field in [e["field"] for e in problem["errors"]]
    assert recorded(service.desk.store) == 0


def test_nul_in_a_query_or_path_is_422_not_a_database_error(api: TestClient) -> None:
    assert_problem(api.get("/v1/tickets?customer=a%00b"), 422, "invalid-request")
    assert_problem(api.get("/v1/tickets/T-2026-%00"), 422, "invalid-request")
    assert_problem(api.get("/v1/events?customer=%00"), 422, "invalid-request")


def test_huge_headers_are_refused(api: TestClient, service: Intake) -> None:
    assert_problem(api.post("/v1/tickets", json=INCIDENT, headers={"Idempotency-Key": "k" * 256}), 422, "invalid-request")
    assert_problem(api.post("/v1/tickets", json=INCIDENT, headers={"X-Correlation-Id": "c" * 201}), 422, "invalid-request")
    assert_problem(api.get("/v1/tickets", headers={"Authorization": "Bearer " + "k" * 10_000}), 401, "unauthenticated")
    assert recorded(service.desk.store) == 0


def test_metacharacters_in_every_string_field_are_stored_verbatim(api: TestClient, service: Intake) -> None:
    for i, text in enumerate(HOSTILE):
        body = {
            "severity": "P3", "customer": text, "contract": text[:200], "summary": text, "description": text,
            "site": {"city": text, "region": text, "address": text}, "device": {"product": text, "model": text, "serial": text},
            "contact": {"name": text, "phone": text, "email": text}, "source": {"system": text, "reference": f"{text}{i}"},
        }
        opened = api.post("/v1/tickets", json=body, headers={"Idempotency-Key": text.encode().hex()})
        assert opened.status_code == 201, opened.text
        ticket = api.get(f"/v1/tickets/{opened.json()['id']}").json()
        assert (ticket["customer"], ticket["site"]["city"], ticket["source"]["system"]) == (text, text, text)
        commented = api.post(f"/v1/tickets/{ticket['id']}/comments", json={"text": text})
        assert commented.status_code == 200
        service.ticket_list.catch_up()
        listed = api.get("/v1/tickets", params={"customer": text, "region": text}).json()
        assert [t["id"] for t in listed["tickets"]] == [ticket["id"]]
    assert api.get("/v1/verify").json()["broken"] is None  # the store is whole, every table still there


def test_a_key_over_its_rate_gets_429_with_retry_after(service: Intake) -> None:
    slow = TestClient(service.app, headers=bearer(service.gate.keyring, "auditor", rate=1))
    answers = [slow.get("/v1/tickets") for _ in range(4)]
    assert [a.status_code for a in answers[:2]] == [200, 200]  # a burst of two for one a second
    limited = assert_problem(answers[2], 429, "rate-limited")
    assert int(answers[2].headers["Retry-After"]) >= 1 and "retry" in limited["detail"]
    other = TestClient(service.app, headers=bearer(service.gate.keyring, "auditor"))
    assert other.get("/v1/tickets").status_code == 200  # one key's limit is not another's


def test_keys_and_webhook_secrets_are_never_in_the_store_or_the_log(
    api: TestClient, service: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = api.post("/v1/keys", json={"name": "zabbix", "role": "integration", "customers": [CUSTOMER]}).json()
    key = issued["key"]
    client = TestClient(service.app, headers={"Authorization": f"Bearer {key}"})
    assert client.post("/v1/tickets", json=INCIDENT).status_code == 201
    hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})
    assert hook.status_code == 201, hook.text
    rotated = client.post(f"/v1/webhooks/{hook.json()['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    secrets = [hook.json()["secret"], rotated.json()["secret"]]
    assert all(s.startswith("whsec_") and len(s) > 40 for s in secrets) and secrets[0] != secrets[1]

    stored = every_value(service.ticket_list.engine)
    assert INCIDENT["summary"].encode() in stored  # the dump does reach what was recorded
    for value in (key, *secrets, *(s.removeprefix("whsec_") for s in secrets)):
        assert value.encode() not in stored
        assert value not in caplog.text


def every_value(engine: sa.Engine) -> bytes:
    """Every value of every table of the database: the event store and the read models."""
    with engine.connect() as connection:
        tables = sa.inspect(connection).get_table_names()
        rows = [row for table in tables for row in connection.execute(sa.text(f'SELECT * FROM "{table}"'))]
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)


# -- every other kind of write, through one table -----------------------------------------

LEAD = "<the ticket's lead engineer>"  # in a body: stands for the lead of the ticket the request is on


@dataclass(frozen=True)
class Endpoint:
    """A write with a valid body and the free-text fields of that body. A path naming
    {ticket} gets a ticket of its own for each request, staffed by dispatch."""

    service: str  # intake or dispatch
    method: str
    path: str
    body: dict[str, Any]
    fields: tuple[str, ...]


ENDPOINTS = {
    "ticket command": Endpoint("intake", "POST", "/v1/tickets/{ticket}/acknowledge", {"plan": "电话联系，远程诊断"}, ("plan",)),
    "contract": Endpoint("intake", "PUT", "/v1/contracts/K-HOSTILE-1", {
        "customer": CUSTOMER, "level": "standard", "valid_from": "2026-01-01", "valid_to": "2026-12-31",
        "region": "陕南", "dedicated_engineer": "E-013"}, ("customer", "region", "dedicated_engineer")),
    "key": Endpoint("intake", "POST", "/v1/keys", {"name": "zabbix", "role": "integration", "customers": [CUSTOMER]},
                    ("name",)),
    "webhook": Endpoint("intake", "POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook", "event_types": ["*"],
                                                          "description": "NOC"}, ("description",)),
    "engineer": Endpoint("dispatch", "PUT", "/v1/engineers/E-900", {
        "name": "测试工程师", "branch": "汉中", "level": "L2", "skills": ["network"], "hours": "cn-business",
        "max_tickets": 3}, ("name",)),
    "spare unit": Endpoint("dispatch", "PUT", "/v1/spare-units/SP-HZ-900", {
        "serial": "SN-900", "model": "S5700-28C-EI", "warehouse": "WH-HZ"}, ("serial", "model")),
    "dispatch action": Endpoint("dispatch", "POST", "/v1/tickets/{ticket}/decline", {"engineer": LEAD, "reason": "车辆故障"},
                                ("reason",)),
}


@dataclass
class Deployment:
    intake: Intake
    dispatch: Dispatch
    clients: dict[str, TestClient]  # service → an admin's client

    def prepare(self, endpoint: Endpoint) -> tuple[str, dict[str, Any]]:
        """The endpoint's path and valid body, with a staffed ticket of its own if it acts on one."""
        if "{ticket}" not in endpoint.path:
            return endpoint.path, endpoint.body
        opened = self.clients["intake"].post("/v1/tickets", json=INCIDENT | {
            "site": {"city": "汉中"}, "device": {"model": "S5700-28C-EI"}}).json()
        self.dispatch.dispatcher.react(UUID(opened["id"]), 1, "ticket.opened", "tests")
        lead = self.dispatch.tickets.get(opened["id"]).lead_engineer
        assert lead is not None
        body = {name: lead if value == LEAD else value for name, value in endpoint.body.items()}
        return endpoint.path.format(ticket=opened["id"]), body

    def position(self) -> int:
        return self.intake.desk.store.recorder.max_notification_id() or 0


@pytest.fixture
def deployment(service: Intake, dispatching: Dispatch) -> Deployment:
    admin = bearer(service.gate.keyring, "admin", "ops")
    return Deployment(service, dispatching, {"intake": TestClient(service.app, headers=admin),
                                             "dispatch": TestClient(dispatching.app, headers=admin)})


def test_over_long_query_strings_are_422_naming_the_parameter(deployment: Deployment) -> None:
    intake_api, dispatch_api = deployment.clients["intake"], deployment.clients["dispatch"]
    for client, path, params, field in [
        (intake_api, "/v1/events", {"type": ["ticket.opened", "t" * 201]}, "query.type.1"),
        (dispatch_api, "/v1/availability", {"city": "汉中", "service_level": "s" * 201}, "query.service_level"),
    ]:
        problem = assert_problem(client.get(path, params=params), 422, "invalid-request")
        assert field in [e["field"] for e in problem["errors"]], problem
    assert dispatch_api.get("/v1/availability", params={"city": "汉中", "service_level": "premium"}).status_code == 200


@pytest.mark.parametrize("name", ENDPOINTS)
def test_bad_bodies_of_every_write_are_refused_naming_the_field(deployment: Deployment, name: str) -> None:
    endpoint = ENDPOINTS[name]
    client = deployment.clients[endpoint.service]
    path, body = deployment.prepare(endpoint)
    before = deployment.position()
    refusals = [(field, body | {field: bad}) for field in endpoint.fields for bad in ("x" * 20_001, "a\x00b")]
    refusals.append(("unexpected", body | {"unexpected": "x"}))
    for field, sent in refusals:
        problem = assert_problem(client.request(endpoint.method, path, json=sent), 422, "invalid-request")
        assert field in [e["field"] for e in problem["errors"]], (field, problem)
    for raw in (json.dumps(body)[:-1].encode(), b"{not json", b'{"' + endpoint.fields[0].encode() + b'": "\xff"}'):
        answer = client.request(endpoint.method, path, content=raw, headers={"content-type": "application/json"})
        assert 400 <= answer.status_code < 500 and answer.headers["content-type"] == "application/problem+json", raw
    assert deployment.position() == before  # nothing recorded


@pytest.mark.parametrize("name", ENDPOINTS)
def test_metacharacters_in_every_write_are_stored_verbatim(deployment: Deployment, name: str) -> None:
    endpoint = ENDPOINTS[name]
    client, store = deployment.clients[endpoint.service], deployment.intake.desk.store
    for text in HOSTILE:
        path, body = deployment.prepare(endpoint)
        after = deployment.position()
        answer = client.request(endpoint.method, path, json=body | dict.fromkeys(endpoint.fields, text))
        assert answer.status_code in (200, 201), answer.text
        events = [store.decode(n) for n in store.recorder.select_notifications(after + 1, 100)]
        assert held([vars(e) for e in events], text) >= len(endpoint.fields), (text, events)  # each field's, as sent
    assert deployment.clients["intake"].get("/v1/verify").json()["broken"] is None


def held(value: Any, text: str) -> int:
    """How many of the values in `value` (nested dicts and lists too) are exactly `text`."""
    if isinstance(value, dict):
        return sum(held(v, text) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(held(v, text) for v in value)
    return int(value == text)
