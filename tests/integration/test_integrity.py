"""Tamper evidence: an event row edited or deleted behind the application's back, in
SQLite or PostgreSQL, is caught by `verify`, which names the first broken link."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.integrity import verify_store, verify_stream
from shared.settings import ROOT, Settings, persistence_env


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml"), clock=clock)
    yield parts
    parts.close()


def tamper(service: Intake, database_url: str, sql_sqlite: str, sql_postgres: str, *params: object) -> int:
    """Run SQL directly on the store's table, as an attacker with database access would."""
    env = persistence_env(database_url)
    table = service.desk.store.recorder.events_table_name
    if env["PERSISTENCE_MODULE"].endswith("sqlite"):
        with sqlite3.connect(env["SQLITE_DBNAME"]) as conn:
            return conn.execute(sql_sqlite.format(table=table), params).rowcount
    schema = env.get("POSTGRES_SCHEMA", "public")
    with psycopg.connect(urlsplit(database_url)._replace(query="").geturl(), autocommit=True) as conn:
        return conn.execute(sql_postgres.format(table=f'"{schema}"."{table}"'), params).rowcount


async def open_worked_ticket(api: httpx.AsyncClient) -> dict:
    ticket = (await api.post("/v1/tickets", json={
        "severity": "P1", "customer": "C-汉中电力", "contract": "K-2026-017", "summary": "核心交换机宕机",
    })).json()
    for path, body in [("acknowledge", {"plan": "engineer dispatched"}), ("resolve", {"resolution": "card replaced", "cause": "card failure"})]:
        assert (await api.post(f"/v1/tickets/{ticket['id']}/{path}", json=body)).status_code == 200
    return ticket


async def test_an_untouched_store_verifies(api: httpx.AsyncClient, service: Intake) -> None:
    ticket = await open_worked_ticket(api)
    verdict = (await api.get(f"/v1/tickets/{ticket['number']}/verify")).json()
    assert verdict == {"checked": 4, "broken": None}
    everything = (await api.get("/v1/verify")).json()
    assert everything["broken"] is None and everything["checked"] == 4 + 8 + 1  # the ticket, the 8 demo contracts, the API key


async def test_an_edited_event_row_is_caught(api: httpx.AsyncClient, service: Intake, database_url: str) -> None:
    ticket = await open_worked_ticket(api)
    edited = tamper(
        service, database_url,
        "UPDATE {table} SET state = CAST(REPLACE(CAST(state AS TEXT), 'card failure', 'user error') AS BLOB) "
        "WHERE CAST(state AS TEXT) LIKE ?",
        "UPDATE {table} SET state = convert_to(replace(convert_from(state, 'UTF8'), 'card failure', 'user error'), 'UTF8') "
        "WHERE convert_from(state, 'UTF8') LIKE %s",
        "%card failure%",
    )
    assert edited == 1
    assert service.desk.get(ticket["id"]).version == 4  # the store still reads: only the hash tells
    verdict = (await api.get(f"/v1/tickets/{ticket['id']}/verify")).json()
    assert verdict["broken"] == {"stream_id": ticket["id"], "version": 4,
                                 "problem": "content altered: hash does not match what is stored"}
    assert verify_store(service.desk.store).broken.version == 4


async def test_a_deleted_event_row_is_caught(api: httpx.AsyncClient, service: Intake, database_url: str) -> None:
    ticket = await open_worked_ticket(api)
    deleted = tamper(
        service, database_url,
        "DELETE FROM {table} WHERE originator_version = 3 AND CAST(state AS TEXT) LIKE ?",
        "DELETE FROM {table} WHERE originator_version = 3 AND convert_from(state, 'UTF8') LIKE %s",
        "%engineer dispatched%",
    )
    assert deleted == 1
    broken = verify_stream(service.desk.store, service.desk.get(ticket["id"], version=2).id).broken
    assert (broken.version, broken.problem) == (4, "version 4 follows version 2: an event is missing")
