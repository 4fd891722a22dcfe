"""Contracts on SQLite and PostgreSQL: the contract book (create, amend only what
changed, nothing for an unchanged put or a re-loaded file, concurrent puts), the
contract list read model, and the contracts API in an in-process app built from
the router, the problem handlers and the intake's context dependency."""
from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.intake import problems
from services.intake.access import Gate
from services.intake.contracts import contracts_router
from shared.clock import FakeClock
from shared.contracts import ContractBook
from shared.keys import Keyring
from shared.rate_limit import RateLimits
from shared.domain.contract import Contract, Tier
from shared.domain.errors import ContractNotFound, InvalidContractTerms
from shared.domain.api_key import Role
from shared.keys import Keyring
from shared.projections.contract_list import ContractListProjection
from shared.projections.rebuild import rebuild
from shared.read_db import read_engine
from shared.settings import ROOT
from shared.store import EventStore
from tests.integration.test_intake_api import assert_problem
from tests.keys import bearer, recorded

SERVICE = {"kind": "service", "id": "test"}
TERMS = {
    "customer": "C-汉中电力",
    "level": "standard",
    "valid_from": "2026-01-01",
    "valid_to": "2026-12-31",
    "warranty_until": "2026-06-30",
    "region": "汉中",
    "zone": "in_city",
}
DEMO_FILE = ROOT / "deploy" / "contracts.toml"


@pytest.fixture
def book(store: EventStore, clock: FakeClock) -> ContractBook:
    return ContractBook(store, clock)


@pytest.fixture
def contract_list(store: EventStore, database_url: str) -> Iterator[ContractListProjection]:
    projection = ContractListProjection(store, read_engine(database_url))
    yield projection
    projection.engine.dispose()


def event_count(store: EventStore) -> int:
    return recorded(store)


def put(book: ContractBook, code: str = "K-1", **changes: object) -> tuple[Contract, bool]:
    return book.put(code, TERMS | changes, actor=SERVICE, correlation_id="corr")


# -- the contract book ----------------------------------------------------------


def test_put_registers_a_contract(book: ContractBook, clock: FakeClock) -> None:
    contract, created = put(book)
    assert created and contract.version == 1
    found = book.get("K-1")
    assert found.customer == "C-汉中电力" and found.valid_to == date(2026, 12, 31) and found.tier is Tier.NORMAL
    assert found.created_on == clock.now()
    (registered,) = book.store.events.get(found.id)
    assert isinstance(registered, Contract.Registered)
    assert registered.actor == SERVICE and registered.correlation_id == "corr"


def test_an_amendment_records_only_the_changed_terms(book: ContractBook, clock: FakeClock) -> None:
    put(book)
    clock.advance(hours=1)
    contract, created = put(book, tier="vip", valid_to="2027-06-30")
    assert not created and contract.version == 2
    amended = list(book.store.events.get(contract.id))[-1]
    assert isinstance(amended, Contract.Amended)
    assert amended.changes == {"tier": "vip", "valid_to": "2027-06-30"}
    assert book.get("K-1").valid_to == date(2027, 6, 30)


def test_a_put_replaces_all_terms_so_an_omitted_one_is_reset(book: ContractBook) -> None:
    put(book)
    terms = {k: v for k, v in TERMS.items() if k != "warranty_until"}
    contract, _ = book.put("K-1", terms, actor=SERVICE, correlation_id="corr")
    assert list(book.store.events.get(contract.id))[-1].changes == {"warranty_until": None}
    assert book.get("K-1").warranty_until is None


def test_an_unchanged_put_records_nothing(book: ContractBook) -> None:
    put(book)
    before = event_count(book.store)
    contract, created = put(book)
    assert not created and contract.version == 1 and event_count(book.store) == before


def test_invalid_terms_record_nothing(book: ContractBook) -> None:
    with pytest.raises(InvalidContractTerms) as refused:
        put(book, valid_to="2025-12-31")
    assert refused.value.field == "valid_to"
    with pytest.raises(InvalidContractTerms) as refused:
        put(book, code="-K")
    assert refused.value.field == "code"
    assert event_count(book.store) == 0


def test_a_level_the_policy_does_not_know_is_refused(store: EventStore, clock: FakeClock) -> None:
    book = ContractBook(store, clock, levels={"standard": "cn-business", "premium": "always"})
    with pytest.raises(InvalidContractTerms, match="'gold' is not a service level") as refused:
        put(book, level="gold")
    assert refused.value.field == "level"
    assert book.load_file(DEMO_FILE, actor=SERVICE) == 8
    assert event_count(store) == 8


def test_an_unknown_contract_is_not_found(book: ContractBook) -> None:
    assert book.find("K-404") is None
    with pytest.raises(ContractNotFound):
        book.get("K-404")


def test_concurrent_puts_of_a_new_contract_register_it_once(book: ContractBook) -> None:
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(put(book)[1])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert event_count(book.store) == 1


def test_loading_a_file_twice_records_once(book: ContractBook, tmp_path: Path) -> None:
    recorded = book.load_file(DEMO_FILE, actor=SERVICE)
    assert recorded == 8 and book.get("K-YL-2026-006").dedicated_engineer == "E-031"
    assert book.load_file(DEMO_FILE, actor=SERVICE) == 0
    edited = tmp_path / "contracts.toml"
    edited.write_text(DEMO_FILE.read_text().replace('dedicated_engineer = "E-031"', 'dedicated_engineer = "E-032"'))
    assert book.load_file(edited, actor=SERVICE) == 1
    assert book.get("K-YL-2026-006").dedicated_engineer == "E-032"


def test_a_file_with_one_mistake_records_nothing(book: ContractBook, tmp_path: Path) -> None:
    broken = tmp_path / "contracts.toml"
    shutil.copy(DEMO_FILE, broken)
    with broken.open("a") as file:
        file.write('\n[K-BAD]\ncustomer = "x"\nlevel = "standard"\nvalid_from = 2026-02-01\nvalid_to = 2026-01-31\n')
    with pytest.raises(InvalidContractTerms) as refused:
        book.load_file(broken, actor=SERVICE)
    assert refused.value.field == "K-BAD.valid_to"
    assert event_count(book.store) == 0


# -- the contract list read model -----------------------------------------------


def test_the_contract_list_follows_registrations_and_amendments(
    book: ContractBook, contract_list: ContractListProjection
) -> None:
    put(book, code="K-2")
    put(book, code="K-1")
    put(book, code="K-3", customer="someone else")
    assert contract_list.catch_up() == 3
    put(book, code="K-1", tier="vip")
    assert contract_list.catch_up() == 1 and contract_list.catch_up() == 0
    rows, total = contract_list.by_customer("C-汉中电力", limit=1, offset=0)
    assert total == 2
    assert rows == [{
        "code": "K-1", "customer": "C-汉中电力", "level": "standard", "tier": "vip",
        "valid_from": date(2026, 1, 1), "valid_to": date(2026, 12, 31), "warranty_until": date(2026, 6, 30),
        "region": "汉中", "zone": "in_city", "dedicated_engineer": None, "version": 2,
    }]
    assert [r["code"] for r in contract_list.by_customer("C-汉中电力", limit=10, offset=1)[0]] == ["K-2"]


# -- the API ----------------------------------------------------------------------


@pytest.fixture
async def api(book: ContractBook, contract_list: ContractListProjection) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    problems.install(app)
    gate = Gate(Keyring(book.store, book.clock), RateLimits(0, 1))
    app.include_router(contracts_router(book, contract_list, gate))
    headers = bearer(gate.keyring, "admin", "A-7")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake", headers=headers) as client:
        yield client


async def test_put_creates_then_amends(api: httpx.AsyncClient, book: ContractBook) -> None:
    created = await api.put("/v1/contracts/K-2026-017", json=TERMS)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/contracts/K-2026-017"
    body = created.json()
    assert body["code"] == "K-2026-017" and body["version"] == 1 and body["tier"] == "normal"
    assert body["valid_to"] == "2026-12-31" and body["registered_at"] == "2026-11-20T09:00:00Z"
    (registered,) = book.store.events.get(book.get("K-2026-017").id)
    assert (registered.actor["kind"], registered.actor["id"]) == ("admin", "A-7")

    amended = await api.put("/v1/contracts/K-2026-017", json=TERMS | {"tier": "vip"})
    assert amended.status_code == 200 and "location" not in amended.headers
    assert amended.json()["tier"] == "vip" and amended.json()["version"] == 2
    unchanged = await api.put("/v1/contracts/K-2026-017", json=TERMS | {"tier": "vip"})
    assert unchanged.status_code == 200 and unchanged.json()["version"] == 2

    fetched = await api.get("/v1/contracts/K-2026-017")
    assert fetched.status_code == 200 and fetched.json() == amended.json()


async def test_an_unknown_contract_is_a_404_problem(api: httpx.AsyncClient) -> None:
    body = assert_problem(await api.get("/v1/contracts/K-404"), 404, "contract-not-found")
    assert body["instance"] == "/v1/contracts/K-404"


async def test_list_by_customer_from_the_read_model(
    api: httpx.AsyncClient, contract_list: ContractListProjection
) -> None:
    for code in ("K-B", "K-A"):
        assert (await api.put(f"/v1/contracts/{code}", json=TERMS)).status_code == 201
    contract_list.catch_up()
    listed = (await api.get("/v1/contracts", params={"customer": "C-汉中电力", "limit": 1})).json()
    assert listed["total"] == 2 and [c["code"] for c in listed["contracts"]] == ["K-A"]
    assert listed["contracts"][0]["valid_from"] == "2026-01-01"
    assert (await api.get("/v1/contracts", params={"customer": "nobody"})).json()["total"] == 0


@pytest.mark.parametrize(
    ("code", "body", "field"),
    [
        ("K-1", TERMS | {"valid_to": "2026-13-01"}, "valid_to"),
        ("K-1", TERMS | {"valid_from": 1767225600}, "valid_from"),  # a timestamp is not a date
        ("K-1", TERMS | {"valid_from": "2026-01-01T00:00:00"}, "valid_from"),
        ("K-1", TERMS | {"colour": "red"}, "colour"),
        ("K-1", TERMS | {"tier": "gold"}, "tier"),
        ("K-1", TERMS | {"zone": "moon"}, "zone"),
        ("K-1", TERMS | {"customer": "x" * 201}, "customer"),
        ("K 1", TERMS, "path.code"),
        ("-K1", TERMS, "path.code"),
        ("K-" + "1" * 63, TERMS, "path.code"),
    ],
)
async def test_an_invalid_put_is_a_422_naming_the_field(
    api: httpx.AsyncClient, store: EventStore, code: str, body: dict, field: str
) -> None:
    problem = assert_problem(await api.put(f"/v1/contracts/{code}", json=body), 422, "invalid-request")
    assert field in [e["field"] for e in problem["errors"]]
    assert event_count(store) == 0


async def test_terms_breaking_a_rule_are_a_422_and_record_nothing(api: httpx.AsyncClient, store: EventStore) -> None:
    backwards = await api.put("/v1/contracts/K-1", json=TERMS | {"valid_to": "2025-12-31"})
    assert "valid_to" in assert_problem(backwards, 422, "invalid-contract-terms")["detail"]
    unknown_zone = await api.put("/v1/contracts/K-1", json=TERMS | {"time_zone": "Asia/Hanzhong"})
    assert "time_zone" in assert_problem(unknown_zone, 422, "invalid-contract-terms")["detail"]
    no_key = await api.put("/v1/contracts/K-1", json=TERMS, headers={"Authorization": "Bearer nobody"})
    assert_problem(no_key, 401, "unauthenticated")
    assert event_count(store) == 0


def test_the_contract_list_passes_over_other_streams_and_still_sees_its_own(
    book: ContractBook, contract_list: ContractListProjection
) -> None:
    """Other aggregates' events (keys here) are skipped in the store, not decoded; an
    amendment recorded after them is still applied, and a rebuild sees it all again."""
    put(book, code="K-1")
    assert contract_list.catch_up() == 1
    keys = Keyring(book.store, book.clock)
    for n in range(5):
        keys.issue(name=f"k{n}", role=Role.AUDITOR, actor={"kind": "admin", "id": "ops"}, correlation_id="c")
    assert contract_list.catch_up() == 0
    put(book, code="K-1", tier="vip")
    assert contract_list.catch_up() == 1
    assert contract_list.by_customer("C-汉中电力", limit=5, offset=0)[0][0]["tier"] == "vip"
    assert rebuild(contract_list) == 2
    assert contract_list.by_customer("C-汉中电力", limit=5, offset=0)[0][0]["version"] == 2
