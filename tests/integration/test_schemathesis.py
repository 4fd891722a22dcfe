"""Schemathesis against each service's own OpenAPI, in process, with an admin key: no
input makes a 500, and every answer is one the schema declares (status code, content
type and body).

Each operation gets Schemathesis's coverage cases (boundaries, missing, extra and
wrong-typed values, other methods) and a bounded number of fuzzed cases, the same ones
on every run. Path parameters are random (so mostly a 404) or, in half the cases, a
real ticket, webhook, key, contract, engineer or spare unit, so that what lies behind
the lookups is fuzzed too. SQLite and PostgreSQL each get a fresh deployment.

The schemas come from the apps themselves, built once at collection on a throwaway
SQLite file (the pytest integration needs the operations before any fixture runs; its
fixture-based loader does not work with pytest 9). Webhook URLs are checked against a
stand-in resolver that puts every host name at one public address: no DNS lookup
leaves the machine, and no notifier runs to call the URL. Literal addresses are still
judged by the SSRF rule, which test_webhook_api.py tests in full.
"""
from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.dispatch.wiring import Dispatch, dispatch
from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.settings import ROOT, Settings
from shared.webhooks import IPAddress
from tests.conftest import postgres_schema
from tests.keys import bearer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
CUSTOMER = "C-汉中电力"  # the customer of contract K-2026-017 in deploy/contracts.toml


def configure(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, contracts_file=ROOT / "deploy" / "contracts.toml",
                    rate_limit=0, secret_key="x" * 43 + "=")


def openapi_documents() -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        settings_ = configure(f"sqlite:///{folder}/openapi.sqlite", Path(folder))
        front, back = intake(settings_), dispatch(settings_)
        try:
            return {"intake": front.app.openapi(), "dispatch": back.app.openapi()}
        finally:
            back.close()
            front.close()


DOCUMENTS = openapi_documents()
intake_api = schemathesis.openapi.from_dict(DOCUMENTS["intake"])
dispatch_api = schemathesis.openapi.from_dict(DOCUMENTS["dispatch"])


def public_resolver(host: str, port: int) -> list[IPAddress]:
    """A literal address as itself, any name at a public address (TEST-NET would be refused)."""
    try:
        return [ip_address(host.strip("[]"))]
    except ValueError:
        return [ip_address("93.184.216.34")]


@dataclass
class Deployment:
    intake: Intake
    dispatch: Dispatch
    admin: dict[str, str]
    real: dict[str, str]  # path parameter → a value that exists

    def known(self, path: str) -> dict[str, str]:
        if "/spare-units/" in path:
            return self.real | {"code": "SP-HZ-001"}
        if "/engineers/" in path:
            return self.real | {"code": "E-013"}
        return self.real


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One database for all the operations of a module (a fresh one for each would
    cost more than the fuzzing)."""
    folder = tmp_path_factory.mktemp("schemathesis")
    if request.param == "sqlite":
        yield f"sqlite:///{folder / 'ticketing.sqlite'}", folder
    else:
        with postgres_schema() as url:
            yield url, folder


@pytest.fixture(scope="module")
def deployment(database: tuple[str, Path]) -> Iterator[Deployment]:
    settings_ = configure(*database)
    clock = FakeClock(datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc))
    front, back = intake(settings_, clock=clock), dispatch(settings_, clock=clock)
    front.webhooks.resolver = public_resolver
    admin = bearer(front.gate.keyring, "admin")
    client = TestClient(front.app, headers=admin)
    ticket = client.post("/v1/tickets", json={"severity": "P1", "customer": CUSTOMER, "contract": "K-2026-017",
                                              "summary": "核心交换机宕机", "site": {"city": "汉中"}}).json()
    webhook = client.post("/v1/webhooks", json={"url": "https://hooks.example.com/in", "event_types": ["*"]}).json()
    key = client.post("/v1/keys", json={"name": "spare", "role": "auditor"}).json()
    real = {"reference": ticket["id"], "webhook_id": webhook["id"], "key_id": key["id"], "code": "K-2026-017"}
    yield Deployment(front, back, admin, real)
    back.close()
    front.close()


def run(case: schemathesis.Case, deployment: Deployment, app: Any) -> None:
    if case.path_parameters and names_real_things(case):
        known = deployment.known(case.path)
        case.path_parameters = {name: known[name] for name in case.path_parameters}
    case.call_and_validate(headers=deployment.admin, checks=CHECKS, app=app)


def names_real_things(case: schemathesis.Case) -> bool:
    """Half the cases, chosen by what they carry: a failing case replays the same way."""
    return zlib.crc32(repr((case.path_parameters, case.query, case.headers, case.body)).encode()) % 2 == 1


@intake_api.parametrize()
@FUZZ
def test_intake(case: schemathesis.Case, deployment: Deployment) -> None:
    run(case, deployment, deployment.intake.app)


@dispatch_api.parametrize()
@FUZZ
def test_dispatch(case: schemathesis.Case, deployment: Deployment) -> None:
    run(case, deployment, deployment.dispatch.app)


# What fuzzing found answered with a 500, or only after seconds: numbers past 64 bits,
# instants at the ends of Python's range, a state asked for far in the future. Each is
# now an invalid request.
EDGES = [
    (intake_api, "GET", "/v1/events", {"query": {"after": 2**64}}),
    (intake_api, "GET", "/v1/tickets", {"query": {"offset": 2**64}}),
    (intake_api, "GET", "/v1/tickets/{reference}", {"query": {"version": 2**64}}),
    (intake_api, "GET", "/v1/tickets/{reference}/events", {"query": {"after_version": 2**64}}),
    (intake_api, "GET", "/v1/tickets/{reference}", {"query": {"as_of": "2999-12-31T00:00:00Z"}}),
    (intake_api, "POST", "/v1/sla/quote", {"body": {"level": "standard", "severity": "P1",
                                                    "start": "9999-12-31T23:00:00Z"}}),
    (intake_api, "POST", "/v1/sla/quote", {"body": {"level": "premium", "severity": "P1",
                                                    "start": "0001-01-01T00:00:00+14:00"}}),
    (dispatch_api, "GET", "/v1/availability", {"query": {"city": "汉中", "at": "9999-12-31T23:00:00Z"}}),
]


@pytest.mark.parametrize(("api", "method", "path", "parts"), EDGES,
                         ids=[f"{method} {path} {parts}" for _, method, path, parts in EDGES])
def test_edges_fuzzing_found_are_invalid_requests(deployment: Deployment, api: schemathesis.BaseSchema, method: str,
                                                  path: str, parts: dict[str, Any]) -> None:
    real = {name: value for name, value in deployment.real.items() if f"{{{name}}}" in path}
    case = api[path][method].Case(path_parameters=real, **parts)
    app = deployment.intake.app if api is intake_api else deployment.dispatch.app
    response = case.call(headers=deployment.admin, app=app)
    case.validate_response(response, checks=CHECKS, headers=deployment.admin)
    assert response.status_code == 422, response.text
