"""The APIs' HTTP serving: an idle connection outlives the client's pool expiry."""
from __future__ import annotations

import httpx
import uvicorn
from fastapi import FastAPI

from shared.serving import server_options
from shared.settings import Settings


def test_the_apis_keep_an_idle_connection_longer_than_clients_keep_theirs() -> None:
    """A client that sends on a pooled connection just as the server closes it loses the
    request (httpx: ReadError; make bench's 64 clients saw 2-25 in a few thousand POSTs
    with uvicorn's 5 s, none with 60 s). So the server waits longer than httpx keeps a
    connection, and the setting reaches uvicorn."""
    config = uvicorn.Config(FastAPI(), **server_options(Settings(), 8080))
    assert config.timeout_keep_alive == 75 > httpx.Limits().keepalive_expiry
    assert uvicorn.Config(FastAPI(), **server_options(Settings(http_keep_alive=9), 8081)).timeout_keep_alive == 9


def test_the_apis_look_for_opentelemetry_providers_only_when_asked(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """FastAPI looks up the global tracer provider on every request unless its telemetry
    is off: about a sixth of the intake's CPU per ticket opened. Off by default."""
    from fastapi.telemetry import _asgi
    from fastapi.testclient import TestClient

    from shared.serving import telemetry

    looked = []
    real = _asgi.trace.get_tracer_provider
    monkeypatch.setattr(_asgi.trace, "get_tracer_provider", lambda: looked.append(1) or real())
    for enabled in (Settings().opentelemetry, True):
        app = FastAPI(telemetry=telemetry(enabled))
        app.get("/ping")(lambda: "pong")
        looked.clear()
        assert TestClient(app).get("/ping").json() == "pong"
        assert bool(looked) is enabled
