"""A webhook receiver on loopback for tests and the benchmark: answers POSTs per path
from a script, or hangs, and keeps every request it got."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic
    wall: float  # Unix time, to compare with the event's own time
    status: int | None  # what the receiver answered (None: it hung)


Answer = tuple[int, dict[str, str]]


@dataclass
class Receiver:
    """Answers POSTs per path from a script (then with `otherwise`), or hangs; keeps every request."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    otherwise: dict[str, int] = field(default_factory=dict)
    hanging: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def script(self, path: str, *answers: int | Answer, then: int = 200) -> None:
        with self.lock:
            self.scripts[path] = [a if isinstance(a, tuple) else (a, {}) for a in answers]
            self.otherwise[path] = then

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        with self.lock:
            script = self.scripts.get(path)
            answer = None if path in self.hanging else script.pop(0) if script else (self.otherwise.get(path, 200), {})
            self.requests.append(Received(path, headers, body, time.monotonic(), time.time(), answer[0] if answer else None))
            return answer


@contextmanager
def serving() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender went away mid-request (a notifier stopped at the end of a
                # test): no receiver acts on half a body, so it is not counted as received.
                return
            answer = state.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if answer is None:
                state.release.wait(30)  # hang until the test ends
                return
            status, headers = answer
            self.send_response(status)
            for name, value in (headers | {"content-length": "0"}).items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
