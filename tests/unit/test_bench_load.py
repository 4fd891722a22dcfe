"""make bench's fixed-rate client (tests/bench/load.py): its hand-written HTTP must count
what a server answers as httpx would, over connections it keeps alive."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from uuid import uuid4

import pytest
import uvicorn
from fastapi import FastAPI, Header, Request, Response

from shared.nats_server import free_port
from tests.bench import load


@pytest.fixture
def intake_like() -> Iterator[tuple[str, list[dict]]]:
    """A server answering POST /v1/tickets: 201 with a new id, or 422 for every third
    request; `seen` holds what each request carried and on which connection."""
    app, seen = FastAPI(), []

    @app.post("/v1/tickets", status_code=201)
    async def open_ticket(request: Request, response: Response, authorization: str = Header(),
                          idempotency_key: str = Header()) -> dict:
        seen.append({"body": await request.json(), "authorization": authorization, "key": idempotency_key,
                     "peer": request.client.port if request.client else None})
        if len(seen) % 3 == 0:
            response.status_code = 422
            return {"title": "refused"}
        return {"id": str(uuid4())}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(timeout=10)


def test_the_fixed_rate_client_counts_answers_and_keeps_its_connections(intake_like: tuple[str, list[dict]]) -> None:
    api, seen = intake_like
    outcome = asyncio.run(load.fixed_rate(api, {"Authorization": "Bearer k"}, rate=100, seconds=0.6))
    assert len(seen) == 60
    assert (outcome.ok, dict(outcome.failures)) == (40, {"422": 20})
    assert len(outcome.opened) == 40 and len(outcome.latencies) == 60
    assert all(r["body"] == load.incident() and r["authorization"] == "Bearer k" for r in seen)
    assert len({r["key"] for r in seen}) == 60  # each POST its own Idempotency-Key
    # One request every 10 ms, most answered well within that: connections are reused
    # (a new one for each request would be 60), with room for a slow moment on a busy machine.
    assert len({r["peer"] for r in seen}) <= 30


def test_a_server_that_is_gone_is_a_failure_not_a_crash() -> None:
    outcome = asyncio.run(load.fixed_rate(f"http://127.0.0.1:{free_port()}", {}, rate=50, seconds=0.1))
    assert outcome.ok == 0 and outcome.failures == {"ConnectionRefusedError": 5}
