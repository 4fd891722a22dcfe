"""Limits on what a request may be, enforced before any route runs: a body larger than
the limit is refused with 413 without being read to its end, and a URL carrying a NUL
character with 422 (PostgreSQL text cannot hold one, so it could only fail later).
"""
from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.intake.problems import problem

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a ticket with a 20,000-character description is ~60 KB
_NUL = re.compile(rb"%00")


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _NUL.search(scope.get("query_string", b"")) or "\x00" in scope["path"]:
            response = problem(Request(scope), 422, "invalid-request", "Request is not valid",
                               "the URL contains a NUL character")
            await response(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:  # chunked: no length declared, so count
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(Request(scope), 413, "body-too-large", "Request body too large",
                           f"the body may be at most {self.max_body_bytes} bytes")
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read once, then whatever else the connection says (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def install(app: ASGIApp, max_body_bytes: int) -> None:
    app.add_middleware(RequestLimits, max_body_bytes=max_body_bytes)  # type: ignore[attr-defined]
