"""One HTTP POST to a receiver, with the SSRF guard applied where it cannot be dodged.

The guard sits in the connection step: the host is resolved, every address checked
against the allow rules, and the connection made to a checked address. So the
check holds for the address actually dialled, whatever DNS answered when the
subscription was made, and a name that changes its answer between a check and a
connect (DNS rebinding) gets nowhere. Redirects are not followed: a 3xx is simply not
a 2xx.
"""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpcore

from services.notifier.retry import retry_after_seconds
from shared.domain.webhook import Destinations
from shared.webhooks import addresses_of

RESPONSE_READ_LIMIT = 64 * 1024  # read this much of an answer (for keep-alive), then drop the connection


class DestinationRefused(Exception):
    """The receiver's host resolves to an address webhooks may not reach."""


@dataclass(frozen=True)
class Answer:
    status_code: int | None  # None: no answer (timeout, refused connection, refused destination)
    latency_ms: float
    error: str | None = None
    retry_after: float | None = None  # seconds, from a Retry-After header


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, dialling only addresses the destinations rule allows."""

    def __init__(self, destinations: Destinations, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._destinations = destinations
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            infos = []
        addresses = addresses_of(infos)
        refusal = self._destinations.refusal(host, addresses)
        if refusal:
            raise DestinationRefused(refusal)
        *others, last = addresses  # refusal() refuses a host without addresses
        for address in others:  # in resolver order, like any client would
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue  # the next address may answer
        return await self._inner.connect_tcp(str(last), port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Sender:
    def __init__(self, destinations: Destinations, timeout: float) -> None:
        self.timeout = timeout
        # No pool-wide connection limit: each subscription's lane bounds its own requests,
        # and a shared limit is exactly what would let a hanging receiver hold up the rest.
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=None, keepalive_expiry=30, network_backend=GuardedBackend(destinations)
        )

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, now: datetime) -> Answer:
        """POST `body`; the answer's status, or why there was none, within `timeout` in all."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._pool.stream("POST", url, headers=dict(headers), content=body) as response:
                    await _drain(response)
        except TimeoutError:
            return Answer(None, _since(started), f"no answer within {self.timeout:g}s")
        except DestinationRefused as error:
            return Answer(None, _since(started), f"destination refused: {error}")
        except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError) as error:
            return Answer(None, _since(started), f"{type(error).__name__}: {error or 'connection failed'}")
        retry_after = retry_after_seconds(_header(response.headers, b"retry-after"), now)
        return Answer(response.status, _since(started), None, retry_after)

    async def close(self) -> None:
        await self._pool.aclose()


async def _drain(response: httpcore.Response) -> None:
    read = 0
    async for chunk in response.aiter_stream():
        read += len(chunk)
        if read > RESPONSE_READ_LIMIT:
            break


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in headers if key.lower() == name), None)


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
