"""Hostile input: oversized and malformed bodies, NUL characters and lone surrogates,
huge headers, SQL and shell metacharacters in every string field, a key over its rate.
Each gets a clear 4xx problem (or, for text that is merely unusual, is stored exactly
as sent) and nothing half-written; and no key ever reaches the store or the log."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
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
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url, max_body_bytes=64 * 1024), clock=clock)
    yield parts
    parts.close()


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


def test_keys_are_never_in_the_store_or_the_log(api: TestClient, service: Intake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    issued = api.post("/v1/keys", json={"name": "zabbix", "role": "integration", "customers": [CUSTOMER]}).json()
    secret = issued["key"]
    client = TestClient(service.app, headers={"Authorization": f"Bearer {secret}"})
    assert client.post("/v1/tickets", json=INCIDENT).status_code == 201
    hook = api.post("/v1/webhooks", json={"url": "https://hooks.example.com/x", "event_types": ["*"]})
    stored = b"".join(n.state for n in service.desk.store.recorder.select_notifications(1, 10_000))
    for value in (secret, hook.json().get("secret", "whsec_absent")):
        assert value.encode() not in stored
        assert value not in caplog.text
