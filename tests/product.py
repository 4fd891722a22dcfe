"""Start the whole product the way `make run` does (deploy/run.py, real processes,
NATS from the wheel) on free ports, for end-to-end tests and the benchmark."""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.keys import new_secret
from shared.nats_server import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Product:
    api: str
    nats_url: str
    process: subprocess.Popen[str]
    admin_key: str
    output: list[str] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        """Headers carrying the admin key the product was started with."""
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def dispatch_api(self) -> str:
        """The dispatch API's base URL, as the launcher printed it."""
        printed = next(line for line in self.output if line.startswith("dispatch "))
        return printed.split()[1].removesuffix("/v1/engineers")

    def key(self, role: str, name: str, **scope: Any) -> dict[str, str]:
        """Headers carrying a new key, issued over the API as an admin would."""
        issued = httpx.post(f"{self.api}/v1/keys", json={"role": role, "name": name} | scope, headers=self.admin)
        issued.raise_for_status()
        return {"Authorization": f"Bearer {issued.json()['key']}"}

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout)


def start_product(data_dir: Path, timeout: float = 60, **settings: str) -> Product:
    """`settings` are TICKETING_* values without the prefix, e.g. database_url=..."""
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETING_")}
    env |= {"TICKETING_DATA_DIR": str(data_dir), "TICKETING_HTTP_PORT": str(http_port),
            "TICKETING_NATS_PORT": str(free_port()), "TICKETING_DISPATCH_PORT": str(free_port())}
    env |= {"TICKETING_ADMIN_KEY": new_secret()} | {f"TICKETING_{k.upper()}": v for k, v in settings.items()}
    process = subprocess.Popen(
        [sys.executable, "deploy/run.py"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    product = Product(f"http://127.0.0.1:{http_port}", "", process, env["TICKETING_ADMIN_KEY"])
    deadline = time.monotonic() + timeout
    while not any("Ctrl-C stops everything" in line for line in product.output):
        if time.monotonic() > deadline or process.poll() is not None:
            with contextlib.suppress(ProcessLookupError):  # the launcher may have stopped everything itself
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError("the product did not start:\n" + "".join(product.output))
        try:
            product.output.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
    threading.Thread(target=_drain, args=(lines, product.output), daemon=True).start()
    product.nats_url = next(line.split()[1] for line in product.output if line.startswith("NATS"))
    return product


def _pump(stream, lines: queue.Queue[str]) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        lines.put(line)


def _drain(lines: queue.Queue[str], output: list[str]) -> None:
    while True:
        output.append(lines.get())
