"""NATS wiring: the connection every process opens and the JetStream stream of events.

Subjects: every recorded public event is published once, by the relay, on

    events.<aggregate>.<event_type>      e.g. events.ticket.opened,
                                              events.ticket.customer_responded

(`shared.event_format.subject` builds it), as a CloudEvents 1.0 structured JSON
message with these headers:

    Nats-Msg-Id         the event's stable id (uuid5 of stream and version), for dedupe
    Content-Type        application/cloudevents+json
    Ticketing-Position  the event's notification id in the store: the relay's position
    Nats-Expected-Last-Sequence  set by the relay so JetStream keeps store order

Consumers filter on `events.ticket.>` or on single event types.

`AckedPublisher` publishes with many JetStream acks in flight, in place of
`js.publish_async`, which in nats-py 2.16 never resolves the future of a publish the
server refuses (nats-io/nats.py#985).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable
from typing import TypeVar

import nats
import nats.errors
from eventsourcing.persistence import InterfaceError as EventsourcingInterfaceError
from eventsourcing.persistence import OperationalError as EventsourcingOperationalError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError
from pydantic import SecretStr

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_SUBJECTS = "events.>"
CONTENT_TYPE = "application/cloudevents+json"
POSITION_HEADER = "Ticketing-Position"
# Long enough to cover a relay restart; dedupe past it rests on the relay's position.
DUPLICATE_WINDOW_SECONDS = 120.0


async def connect(url: str, *, user: str | None = None, password: SecretStr | None = None) -> Client:
    """Connect, retrying forever (the first connection too): a NATS restart or a
    late start must not end a service, so callers that must stay stoppable race
    this against their stop signal.

    A server that requires credentials (deploy/nats/) gets `user` and `password`, or
    else the user and password in the URL (nats://user:pass@host:4222). Refused
    credentials are retried too, each refusal logged ('Authorization Violation').
    """
    return await nats.connect(
        url,
        user=user,
        password=password.get_secret_value() if password else None,
        name="ticketing",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=_log_error,
        disconnected_cb=_log_disconnected,
        reconnected_cb=_log_reconnected,
    )


# One line each instead of nats-py's default traceback per failed reconnect attempt.
async def _log_error(error: Exception) -> None:
    log.warning("nats: %r", error)


async def _log_disconnected() -> None:
    log.info("nats: disconnected")


async def _log_reconnected() -> None:
    log.info("nats: reconnected")


async def ensure_event_stream(js: JetStreamContext, name: str) -> None:
    """Create the event stream, or bring an existing one to this configuration.

    No max_age: the stream is the published audit trail, so nothing expires.
    """
    config = StreamConfig(
        name=name,
        subjects=[EVENT_SUBJECTS],
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        description="Every recorded public ticketing event, in store order.",
    )
    await ensure_stream(js, config)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to `config` (every instance may do it)."""
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s", config.name)
    else:
        await js.update_stream(config)


# Failures worth retrying in any worker: NATS or the database unreachable, slow, or
# refusing for now. Anything else is a bug and ends the worker.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,  # includes nats.errors.TimeoutError and an ack that never came
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    APIError,
    NoStreamResponseError,
    EventsourcingOperationalError,
    EventsourcingInterfaceError,
)


class AckedPublisher:
    """JetStream publishes whose acks are futures, awaited later by the caller.

    Messages go out on one connection in call order, so the stream stores them in
    that order. A refused publish fails its future with nats-py's own APIError
    subclass (e.g. BadRequestError); a publish that gets no answer never resolves,
    so callers await acks with a timeout.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count()
        self._pending: dict[str, asyncio.Future[PubAck]] = {}
        self._subscription: Subscription | None = None

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[PubAck]:
        if self._subscription is None:
            self._subscription = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        token = str(next(self._tokens))
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        future.add_done_callback(lambda _: self._pending.pop(token, None))
        try:
            await self._nc.publish(subject, payload, reply=f"{self._inbox}.{token}", headers=headers)
        except nats.errors.Error:
            future.cancel()
            raise
        return future

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        for future in list(self._pending.values()):
            future.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":  # no stream listens on the subject
            future.set_exception(NoStreamResponseError())
            return
        response = json.loads(msg.data)
        if "error" in response:
            try:
                APIError.from_error(response["error"])  # raises the matching subclass
            except APIError as error:
                future.set_exception(error)
            return
        future.set_result(PubAck.from_response(response))


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """The result of `work`, or None (and `work` cancelled) if `stop` is set first."""
    working = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if working.done():
        return working.result()
    working.cancel()
    return None
