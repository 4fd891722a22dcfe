"""The relay: every recorded public event reaches JetStream, once, in store order.

The store's notification log is the outbox (architecture invariant 3). The relay's
position is the stream itself: the `Ticketing-Position` header of the stream's last
message. Nothing else is written anywhere, so a position is "recorded" exactly when
JetStream has acknowledged the message that carries it.

Ordering under failure: messages are published in windows (many acks in flight),
and each carries `Nats-Expected-Last-Sequence`, so JetStream refuses a message
whose predecessor did not land. A lost publish therefore fails everything after it
instead of leaving a gap that a retry would fill out of order. On any failure the
relay reads the stream's tail again and continues from there; `Nats-Msg-Id` dedupe
covers the rest.

One relay publishes at a time (a lock, see `_PostgresGate` and `_SqliteGate`); the
expected-sequence check keeps the stream ordered even if two ever overlapped.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Protocol

import psycopg
from nats.aio.client import Client
from nats.js import JetStreamContext
from psycopg import sql

from shared.bus import CONTENT_TYPE, POSITION_HEADER, TRANSIENT_ERRORS, AckedPublisher
from shared.event_format import cloud_event, is_internal_topic, subject
from shared.store import EventStore

log = logging.getLogger(__name__)

ACK_TIMEOUT_SECONDS = 5.0
LOCK_POLL_SECONDS = 1.0
SQLITE_POLL_SECONDS = 0.02  # the relay lag target is p99 <= 100 ms
POSTGRES_FALLBACK_POLL_SECONDS = 1.0  # in case a NOTIFY is missed (e.g. while reconnecting)
STOP_CHECK_SECONDS = 0.1
RETRY_MIN_SECONDS = 0.05
RETRY_MAX_SECONDS = 5.0


class StreamOutOfStep(Exception):
    """JetStream acknowledged a message, but not as the next one in the stream."""


# Failures worth retrying: NATS or the database unreachable, slow, or refusing a
# message (a wrong expected sequence). Anything else is a bug and ends the relay.
RETRIED = (*TRANSIENT_ERRORS, StreamOutOfStep)


@dataclass(frozen=True)
class _Tail:
    position: int  # the last notification id relayed (or skipped as internal)
    seq: int  # the stream sequence of the last message in the stream


@dataclass(frozen=True)
class _Outgoing:
    position: int
    subject: str
    body: bytes
    event_id: str


@dataclass(frozen=True)
class _Window:
    events: list[_Outgoing]  # the public ones
    last: int  # the last notification id read
    full: bool  # as many read as asked for: more may be waiting


class Relay:
    def __init__(self, store: EventStore, nc_or_js: Client | JetStreamContext, stream_name: str, *, window: int = 256) -> None:
        self.store = store
        if isinstance(nc_or_js, Client):
            self.js = nc_or_js.jetstream()
            self._publisher = AckedPublisher(nc_or_js)
        else:
            self.js = nc_or_js
            self._publisher = AckedPublisher(nc_or_js._nc)  # nats-py keeps a context's connection private
        self.stream_name = stream_name
        self.window = window
        self._tail: _Tail | None = None  # None: read it from the stream before publishing
        # The next window, read while this one's acks come back: (its start, the read).
        self._ahead: tuple[int, asyncio.Future[_Window]] | None = None

    async def relay_available(self) -> int:
        """Publish everything now in the log; return how many events were published."""
        published, more = 0, True
        while more:
            count, more = await self._relay_window()
            published += count
        return published

    async def run(self, stop: asyncio.Event) -> None:
        """Take the lock, then relay and wait for news, until `stop` is set."""
        gate = _gate_for(self.store, self.stream_name)
        standing_by = False
        try:
            while not stop.is_set():
                if await _acquire(gate, stop):
                    log.info("relay to stream %s acquired the lock", self.stream_name)
                    standing_by = False
                    await self._lead(gate, stop)
                elif not standing_by:
                    log.info("relay to stream %s standing by: another relay holds the lock", self.stream_name)
                    standing_by = True
        finally:
            await self._drop_read_ahead()  # the store closes after us: no read may be left running
            await gate.release()
            await self._publisher.close()

    async def _lead(self, gate: _Gate, stop: asyncio.Event) -> None:
        self._tail = None  # another relay may have moved the stream on since we last looked
        backoff = RETRY_MIN_SECONDS
        while not stop.is_set():
            try:
                _, more = await self._relay_window()
                if not more:  # a commit since the read has sent its notification: none is missed
                    await gate.wait_for_news(stop)
                backoff = RETRY_MIN_SECONDS
            except RETRIED as error:
                log.warning("relay failed (%r); retrying in %.2fs", error, backoff)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, RETRY_MAX_SECONDS)
            except psycopg.OperationalError as error:
                # Only the gate's own connection raises raw psycopg errors: its lock is gone.
                log.warning("relay lost its lock connection (%s); waiting for the lock again", error)
                await gate.release()
                return

    async def _relay_window(self) -> tuple[int, bool]:
        """Publish the next window of the log: how many were published, and whether more
        may be waiting (the window was full)."""
        try:
            if self._tail is None:
                self._tail = await self._read_tail()
            window = await self._window_after(self._tail.position)
            if window.full:  # reading and encoding the next one overlaps waiting for this one's acks
                self._ahead = (window.last, asyncio.ensure_future(asyncio.to_thread(self._read, window.last)))
            await self._publish(window.events)
            self._tail = replace(self._tail, position=window.last)  # past trailing internal events too
            return len(window.events), window.full
        except RETRIED:
            self._tail = None  # the stream is the truth: read it again before retrying
            raise

    async def _window_after(self, position: int) -> _Window:
        """The window after `position`: the one read ahead if it starts there (it does
        unless a publish failed), else read now."""
        if self._ahead is not None and self._ahead[0] == position:
            reading, self._ahead = self._ahead[1], None
            return await reading
        await self._drop_read_ahead()
        return await asyncio.to_thread(self._read, position)

    async def _drop_read_ahead(self) -> None:
        if self._ahead is not None:
            reading, self._ahead = self._ahead[1], None
            await asyncio.gather(reading, return_exceptions=True)  # a thread can't be cancelled

    async def _read_tail(self) -> _Tail:
        state = (await self.js.stream_info(self.stream_name)).state
        if state.messages == 0:
            return _Tail(position=0, seq=state.last_seq)
        last = await self.js.get_msg(self.stream_name, seq=state.last_seq)
        position = (last.headers or {}).get(POSITION_HEADER)
        if position is None:
            raise RuntimeError(
                f"stream {self.stream_name} message {state.last_seq} has no {POSITION_HEADER} header: "
                "only the relay may publish to the event stream"
            )
        return _Tail(position=int(position), seq=state.last_seq)

    def _read(self, after: int) -> _Window:
        """The next window (runs in a thread)."""
        notifications = self.store.recorder.select_notifications(after, self.window, inclusive_of_start=False)
        outgoing = []
        for notification in notifications:
            if is_internal_topic(notification.topic):
                continue
            event = self.store.decode(notification)
            envelope = cloud_event(event, notification.id)
            body = json.dumps(envelope, ensure_ascii=False).encode()
            outgoing.append(_Outgoing(notification.id, subject(event), body, envelope["id"]))
        return _Window(outgoing, notifications[-1].id if notifications else after, len(notifications) == self.window)

    async def _publish(self, batch: list[_Outgoing]) -> None:
        """Publish a window, then take the acks in order, advancing over the acknowledged prefix."""
        assert self._tail is not None
        acks: list[asyncio.Future] = []
        try:
            for offset, outgoing in enumerate(batch):
                headers = {
                    "Nats-Msg-Id": outgoing.event_id,
                    "Content-Type": CONTENT_TYPE,
                    POSITION_HEADER: str(outgoing.position),
                    "Nats-Expected-Last-Sequence": str(self._tail.seq + offset),
                }
                acks.append(await self._publisher.publish(outgoing.subject, outgoing.body, headers))
            async with asyncio.timeout(ACK_TIMEOUT_SECONDS):  # one timer for the window, not one per ack
                for outgoing, pending in zip(batch, acks):
                    ack = await pending
                    if ack.duplicate or ack.seq != self._tail.seq + 1:
                        raise StreamOutOfStep(f"event at position {outgoing.position} acknowledged as stream seq {ack.seq}")
                    self._tail = _Tail(position=outgoing.position, seq=ack.seq)
        finally:
            _abandon(acks)


def _abandon(acks: list[asyncio.Future]) -> None:
    """Free the in-flight slots of acks no longer awaited, and mark their errors seen:
    after the first failure the rest are refused as out of sequence anyway."""
    for pending in acks:
        if not pending.done():
            pending.cancel()
        elif not pending.cancelled():
            pending.exception()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _acquire(gate: _Gate, stop: asyncio.Event) -> bool:
    try:
        if await gate.try_acquire():
            return True
    except psycopg.OperationalError as error:
        log.warning("relay could not reach the database for its lock: %s", error)
        await gate.release()
    await _sleep_unless(stop, LOCK_POLL_SECONDS)
    return False


# -- the lock and the wake-up, per backend ------------------------------------------


class _Gate(Protocol):
    async def try_acquire(self) -> bool: ...
    async def wait_for_news(self, stop: asyncio.Event) -> None: ...
    async def release(self) -> None: ...


def _gate_for(store: EventStore, stream_name: str) -> _Gate:
    env = store.env
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        return _PostgresGate(
            conninfo={
                "dbname": env["POSTGRES_DBNAME"],
                "host": env["POSTGRES_HOST"],
                "port": env["POSTGRES_PORT"],
                "user": env["POSTGRES_USER"],
                "password": env.get("POSTGRES_PASSWORD") or None,
            },
            lock_name=f"ticketing-relay:{env.get('POSTGRES_SCHEMA') or 'public'}:{stream_name}",
            channel=store.recorder.channel_name,
        )
    database = env["SQLITE_DBNAME"]
    in_memory = database == ":memory:" or "mode=memory" in database
    return _SqliteGate(None if in_memory else Path(f"{database}.relay-{stream_name}.lock"))


class _PostgresGate:
    """A session advisory lock held on a dedicated async connection for as long as this
    relay leads. The same connection LISTENs on the channel the eventsourcing recorder
    NOTIFYs in every insert transaction (the events table name), so a commit wakes
    the relay at once; a poll every second covers a notification missed while the
    connection was being replaced. If the connection dies, so does the lock: waiting
    on it raises psycopg.OperationalError and the relay goes back to acquiring."""

    def __init__(self, conninfo: dict[str, str | None], lock_name: str, channel: str) -> None:
        self._conninfo = conninfo
        self._key = int.from_bytes(hashlib.sha256(lock_name.encode()).digest()[:8], "big", signed=True)
        self._channel = channel
        self._conn: psycopg.AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(**self._conninfo, autocommit=True)
        cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self._key])
        row = await cursor.fetchone()
        if not (row and row[0]):
            return False
        # LISTEN only once leading (a standby would pile up unread notifications), and
        # before the first catch-up, so an insert committed meanwhile still wakes us.
        await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return True

    async def wait_for_news(self, stop: asyncio.Event) -> None:
        assert self._conn is not None
        deadline = time.monotonic() + POSTGRES_FALLBACK_POLL_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            async for _ in self._conn.notifies(timeout=STOP_CHECK_SECONDS, stop_after=1):
                return

    async def release(self) -> None:
        # Closing the session releases its advisory lock.
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class _SqliteGate:
    """flock on a file next to the database: the kernel drops it when the process dies.
    SQLite has no notifications, so the relay polls the log every 20 ms (a cheap
    indexed read). An in-memory database has no other process to exclude."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._file: IO[bytes] | None = None

    async def try_acquire(self) -> bool:
        if self._path is None:
            return True
        file = open(self._path, "ab")  # noqa: SIM115 - held open for as long as we lead
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        self._file = file
        return True

    async def wait_for_news(self, stop: asyncio.Event) -> None:
        await _sleep_unless(stop, SQLITE_POLL_SECONDS)

    async def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
