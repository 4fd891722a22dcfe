"""Fixtures: a fresh store on SQLite and on PostgreSQL, and a private nats-server.

Without PostgreSQL a test skips locally; with TICKETING_REQUIRE_SERVICES=1 (set by
.ci/run) it fails instead, so CI can never pass by skipping the real parts.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from shared.clock import FakeClock
from shared.nats_server import free_port, start_nats_server
from shared.store import EventStore, open_store

POSTGRES_URL = os.environ.get("TICKETING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("TICKETING_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (TICKETING_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(reason)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL with a schema of its own, dropped afterwards."""
    schema = f"test_{uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        unavailable(f"PostgreSQL unavailable at {POSTGRES_URL}: {error}")
    with admin:
        yield f"{POSTGRES_URL}?schema={schema}"
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ticketing.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(database_url: str) -> Iterator[EventStore]:
    store = open_store(database_url)
    yield store
    store.close()


@pytest.fixture
def clock() -> FakeClock:
    # A Friday afternoon in Shanghai (09:00 UTC = 17:00 local).
    return FakeClock(datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc))


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    try:
        server = start_nats_server(tmp_path / "jetstream", port)
    except (OSError, RuntimeError, TimeoutError) as error:
        unavailable(f"nats-server from the wheel did not start: {error}")
    yield f"nats://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)
