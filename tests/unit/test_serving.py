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
