"""Run the intake API: `python -m services.intake` (settings from TICKETING_*)."""
from __future__ import annotations

import logging
import signal
import socket
import sys
from urllib.parse import urlsplit

import uvicorn

from shared.bootstrap import intake
from shared.process import run_loop
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
    # uvicorn handles the signals while it serves and raises them again when done:
    # exit cleanly then, and on a signal during start-up.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
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
