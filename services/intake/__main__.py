"""Run the intake API: `python -m services.intake` (settings from TICKETING_*)."""
from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

import uvicorn

from shared.bootstrap import intake
from shared.process import exit_cleanly_on_signals, run_loop
from shared.serving import server_options
from shared.settings import Settings


def nats_reachable(url: str) -> bool:
    address = urlsplit(url)
    try:
        socket.create_connection((address.hostname or "127.0.0.1", address.port or 4222), timeout=0.5).close()
    except OSError:
        return False
    return True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s intake %(levelname)s %(name)s: %(message)s")
    exit_cleanly_on_signals()
    settings = Settings()
    nats_url = settings.nats_url
    ready = (lambda: {"nats": nats_reachable(nats_url)}) if nats_url else (lambda: {})
    service = intake(settings, ready=ready)
    try:
        run_loop(uvicorn.Server(uvicorn.Config(service.app, **server_options(settings, settings.http_port))).serve())
    finally:
        service.close()


if __name__ == "__main__":
    main()
