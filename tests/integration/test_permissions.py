"""The permission matrix: every endpoint of both APIs × every role → allowed or refused.

The expected matrix is written out here, not derived from shared/access.py, so a
change to who may do what fails this test until the matrix is changed too; and every
path of each service's OpenAPI must be in it, so a new route cannot slip in unguarded.
"Allowed" means the gate let the request through (its answer may still be a 404 or a
422 for the deliberately empty body); "refused" means 403 with a problem body.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.dispatch.wiring import Dispatch, dispatch
from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.domain.api_key import Role
from shared.domain.errors import Unauthenticated
from shared.keys import BOOTSTRAP_ACTOR, Keyring, first_admin_key, new_secret, record_admin_key
from shared.settings import ROOT, Settings
from shared.store import EventStore
from tests.keys import bearer

ROLES = ("integration", "engineer", "agent", "auditor", "admin")
ALL = "integration engineer agent auditor admin"
CUSTOMER = "C-汉中电力"  # the customer of contract K-2026-017 in deploy/contracts.toml

INTAKE = {
    ("POST", "/v1/tickets"): "integration agent admin",
    ("GET", "/v1/tickets"): ALL,
    ("GET", "/v1/tickets/{reference}"): ALL,
    ("GET", "/v1/tickets/{reference}/events"): ALL,
    ("GET", "/v1/tickets/{reference}/timeline"): ALL,
    ("GET", "/v1/tickets/{reference}/report"): ALL,
    ("GET", "/v1/tickets/{reference}/verify"): ALL,
    ("GET", "/v1/events"): "integration agent auditor admin",
    ("GET", "/v1/verify"): "agent auditor admin",
    ("POST", "/v1/sla/quote"): ALL,
    ("GET", "/v1/policy"): "auditor admin",
    ("POST", "/v1/tickets/{reference}/acknowledge"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/comments"): "integration engineer agent admin",
    ("POST", "/v1/tickets/{reference}/severity"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/await-customer"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/customer-response"): "integration engineer agent admin",
    ("POST", "/v1/tickets/{reference}/arrive"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/resolve"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/confirm"): "integration agent admin",
    ("POST", "/v1/tickets/{reference}/reopen"): "integration engineer agent admin",
    ("POST", "/v1/tickets/{reference}/close"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/cancel"): "integration agent admin",
    ("POST", "/v1/tickets/{reference}/visit-request"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/callback"): "engineer agent admin",
    ("POST", "/v1/tickets/{reference}/escalate"): "engineer agent admin",
    ("PUT", "/v1/contracts/{code}"): "admin",
    ("GET", "/v1/contracts/{code}"): "integration agent auditor admin",
    ("GET", "/v1/contracts"): "integration agent auditor admin",
    ("GET", "/v1/reports/sla"): "integration agent auditor admin",
    ("POST", "/v1/keys"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("GET", "/v1/keys/{key_id}"): "admin",
    ("POST", "/v1/keys/{key_id}/revoke"): "admin",
    ("POST", "/v1/webhooks"): "integration admin",
    ("GET", "/v1/webhooks"): "integration auditor admin",
    ("GET", "/v1/webhooks/{webhook_id}"): "integration auditor admin",
    ("PATCH", "/v1/webhooks/{webhook_id}"): "integration admin",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "integration admin",
    ("POST", "/v1/webhooks/{webhook_id}/pause"): "integration admin",
    ("POST", "/v1/webhooks/{webhook_id}/resume"): "integration admin",
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): "integration admin",
    ("POST", "/v1/webhooks/{webhook_id}/redeliver"): "integration admin",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "integration auditor admin",
}
DISPATCH = {
    ("PUT", "/v1/engineers/{code}"): "admin",
    ("GET", "/v1/engineers/{code}"): "engineer agent auditor admin",
    ("GET", "/v1/engineers"): "engineer agent auditor admin",
    ("GET", "/v1/availability"): "engineer agent auditor admin",
    ("PUT", "/v1/spare-units/{code}"): "admin",
    ("GET", "/v1/spare-units/{code}"): "engineer agent auditor admin",
    ("GET", "/v1/spare-units"): "engineer agent auditor admin",
    ("GET", "/v1/stock"): "engineer agent auditor admin",
    **{("POST", f"/v1/spare-units/{{code}}/{step}"): "agent admin"
       for step in ("ship", "install", "return", "convert", "restock", "retire")},
    ("GET", "/v1/tickets/{reference}/dispatch"): ALL,
    **{("POST", f"/v1/tickets/{{reference}}/{action}"): "engineer agent admin"
       for action in ("spare-request", "accept", "decline", "depart", "arrive", "hand-back")},
    ("POST", "/v1/tickets/{reference}/complaint"): "integration agent admin",
}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}


@dataclass
class Deployment:
    intake: Intake
    dispatch: Dispatch
    keys: dict[str, dict[str, str]]  # role → headers
    values: dict[str, str]  # path parameter → a real value


@pytest.fixture
def deployment(database_url: str, clock: FakeClock) -> Iterator[Deployment]:
    settings = Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml", rate_limit=0,
                        webhook_allowed_hosts=("127.0.0.1",), secret_key="x" * 43 + "=")
    front, back = intake(settings, clock=clock), dispatch(settings, clock=clock)
    keyring = front.gate.keyring
    keys = {role: bearer(keyring, role, customers=(CUSTOMER,) if role == "integration" else (),
                         engineer="E-013" if role == "engineer" else None) for role in ROLES}
    admin = TestClient(front.app, headers=keys["admin"])
    ticket = admin.post("/v1/tickets", json={"severity": "P2", "customer": CUSTOMER, "summary": "交换机故障"}).json()
    webhook = admin.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"],
                                               "filters": {"customers": [CUSTOMER]}}).json()
    key = admin.post("/v1/keys", json={"name": "spare", "role": "auditor"}).json()
    values = {"reference": ticket["id"], "webhook_id": webhook["id"], "key_id": key["id"], "code": "K-2026-017"}
    yield Deployment(front, back, keys, values)
    back.close()
    front.close()


def routes(app: FastAPI) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}


def call(client: TestClient, method: str, path: str, values: dict[str, str], headers: dict[str, str]) -> Any:
    if "/spare-units/" in path or "/engineers/" in path:
        values = values | {"code": "SP-HZ-001" if "/spare-units/" in path else "E-013"}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return client.request(method, path.format(**values), json=body, headers=headers)


@pytest.mark.parametrize("service", ["intake", "dispatch"])
def test_every_route_is_in_the_matrix_and_needs_a_key(deployment: Deployment, service: str) -> None:
    app, matrix = (deployment.intake.app, INTAKE) if service == "intake" else (deployment.dispatch.app, DISPATCH)
    assert routes(app) - PUBLIC == set(matrix)
    client = TestClient(app)
    for method, path in sorted(matrix):
        for headers in ({}, {"Authorization": "Bearer tk_not-a-key"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
            answer = call(client, method, path, deployment.values, headers)
            assert (answer.status_code, answer.json()["type"]) == (401, "/problems/unauthenticated"), (method, path)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    for method, path in PUBLIC:
        assert client.request(method, path).status_code == 200


@pytest.mark.parametrize("service", ["intake", "dispatch"])
def test_every_role_on_every_route(deployment: Deployment, service: str) -> None:
    app, matrix = (deployment.intake.app, INTAKE) if service == "intake" else (deployment.dispatch.app, DISPATCH)
    client = TestClient(app, raise_server_exceptions=False)
    wrong = []
    for (method, path), allowed in sorted(matrix.items()):
        for role in ROLES:
            answer = call(client, method, path, deployment.values, deployment.keys[role])
            assert answer.status_code < 500, (method, path, role, answer.text)
            refused = answer.status_code == 403 and answer.json()["type"] == "/problems/forbidden"
            if refused == (role in allowed.split()) or answer.status_code == 401:
                wrong.append(f"{role} {method} {path} → {answer.status_code} {answer.text[:120]}")
    assert not wrong, "\n".join(wrong)


def test_a_revoked_key_is_refused_at_once_by_both_services(deployment: Deployment) -> None:
    admin = TestClient(deployment.intake.app, headers=deployment.keys["admin"])
    issued = admin.post("/v1/keys", json={"name": "li.wei", "role": "agent"})
    assert issued.status_code == 201 and issued.json()["key"].startswith("tk_")
    agent = {"Authorization": f"Bearer {issued.json()['key']}"}
    assert TestClient(deployment.dispatch.app, headers=agent).get("/v1/engineers/E-013").status_code == 200
    revoked = admin.post(f"/v1/keys/{issued.json()['id']}/revoke", json={"reason": "left the company"})
    assert revoked.json()["revoked_reason"] == "left the company"
    for app in (deployment.intake.app, deployment.dispatch.app):
        assert TestClient(app, headers=agent).get("/v1/engineers/E-013" if app is deployment.dispatch.app
                                                   else "/v1/tickets").status_code == 401
    assert "key" not in admin.get(f"/v1/keys/{issued.json()['id']}").json()  # shown once, at issue only


def test_events_name_the_keys_principal(deployment: Deployment) -> None:
    reference = deployment.values["reference"]
    client = TestClient(deployment.intake.app, headers=deployment.keys["agent"])
    client.post(f"/v1/tickets/{reference}/acknowledge", json={"plan": "远程诊断"})
    client.post(f"/v1/tickets/{reference}/comments", json={"text": "客户已告知"},
                headers=deployment.keys["integration"])
    actors = [e["actor"] for e in client.get(f"/v1/tickets/{reference}/events").json()]
    agent_key = asyncio.run(deployment.intake.gate.keyring.authenticate(deployment.keys["agent"]["Authorization"][7:]))
    assert actors[-2] == {"kind": "agent", "id": "test-agent", "key": str(agent_key.key_id)}
    assert (actors[-1]["kind"], actors[-1]["id"]) == ("client", "test-integration")


def test_the_first_start_issues_one_admin_key_and_an_operator_s_key_is_recorded_once(
    store: EventStore, clock: FakeClock, tmp_path: Path
) -> None:
    keyring = Keyring(store, clock)
    marker = tmp_path / "admin-key.id"
    secret = first_admin_key(keyring, marker=marker)
    assert secret and asyncio.run(keyring.authenticate(secret)).role == "admin"
    assert first_admin_key(keyring, marker=marker) is None  # printed once: later starts issue none
    record_admin_key(keyring, "operator-chosen-key")
    record_admin_key(keyring, "operator-chosen-key")  # every start, every replica: still one key
    assert asyncio.run(keyring.authenticate("operator-chosen-key")).role == "admin"
    assert sum(1 for n in store.recorder.select_notifications(1, 100) if "api_key" in n.topic) == 2


async def test_keys_presented_at_the_same_moment_are_read_together_and_each_judged_alone(
    store: EventStore, clock: FakeClock
) -> None:
    keyring = Keyring(store, clock)
    issued = [keyring.issue(name=f"client-{n}", role=Role.INTEGRATION, customers=("C-汉中电力",),
                            actor=BOOTSTRAP_ACTOR, correlation_id="test")[1] for n in range(3)]
    revoked = keyring.issue(name="leaked", role=Role.AGENT, actor=BOOTSTRAP_ACTOR, correlation_id="test")
    keyring.revoke(revoked[0].id, reason="leaked", actor=BOOTSTRAP_ACTOR, correlation_id="test")
    reads, get_many = [], store.get_many

    def counted(ids: Any) -> Any:
        reads.append(len(ids))
        return get_many(ids)

    store.get_many = counted  # type: ignore[method-assign]
    presented = [*issued, *issued, revoked[1], new_secret(), ""]
    answers = await asyncio.gather(*(keyring.authenticate(secret) for secret in presented),
                                   return_exceptions=True)

    assert [a.name for a in answers[:6]] == ["client-0", "client-1", "client-2"] * 2  # type: ignore[union-attr]
    assert all(isinstance(a, Unauthenticated) for a in answers[6:])  # revoked, unknown, none
    assert reads == [5]  # the 5 keys among the 8 presented, in one read
