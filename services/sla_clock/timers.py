"""SLA deadlines kept in JetStream: one message schedule per ticket.

The stream (SLA_TIMERS by default) holds two subjects per ticket:

    sla.timers.<ticket_id>   the ticket's pending schedule: a message with
                             `Nats-Schedule: @at <instant>` and
                             `Nats-Schedule-Target: sla.due.<ticket_id>`
    sla.due.<ticket_id>      where the server publishes it when the instant comes

With `max_msgs_per_subject=1`, publishing a new schedule on a ticket's timer subject
replaces the old one, and purging the subject cancels it. The stream is file-backed
and replicated like any other, so deadlines survive a restart of every SLA service
and of the server (checked: a schedule whose instant passed while the server was
down fired 0.2 s after it came back; one that fell due while no SLA service ran
waits on sla.due.<id> for the next one to start).

Schedules fire `LEAD_SECONDS` ahead of the deadline and the body names the deadline
itself; consumers hold the message until then. Measured against nats-server 2.15.1:
the server runs its schedule timer at most every 250 ms (p99 0.25 s late with
hundreds pending) and, with schedules close together, was seen up to 0.9 s late;
held messages are recorded within milliseconds of their instant instead.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from uuid import UUID

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header, StorageType, StreamConfig

from shared.bus import ensure_stream

log = logging.getLogger(__name__)

TIMER_PREFIX = "sla.timers"
DUE_PREFIX = "sla.due"
DUE_SUBJECTS = f"{DUE_PREFIX}.>"
LEAD_SECONDS = 1.0


@dataclass(frozen=True)
class Due:
    """A fired timer: which ticket, the deadline it was armed for, and the correlation
    id of the event that armed it (None if that event had none)."""

    ticket_id: UUID
    at: datetime
    correlation_id: str | None

    @classmethod
    def from_message(cls, msg: Msg) -> Due:
        """Raises ValueError for a message that is not a fired timer of ours."""
        try:
            body = json.loads(msg.data)
            due = cls(UUID(body["ticket_id"]), datetime.fromisoformat(body["at"]), body.get("correlation_id"))
        except (KeyError, TypeError) as error:
            raise ValueError(f"{msg.subject}: not a timer message ({error!r})") from None
        if due.at.tzinfo is None:
            raise ValueError(f"{msg.subject}: timer instant {body['at']!r} has no time zone")
        return due


async def ensure_timer_stream(js: JetStreamContext, name: str) -> None:
    """Create the timer stream, or bring an existing one to this configuration.

    No max_age: it would silently purge schedules that are still pending.
    """
    config = StreamConfig(
        name=name,
        subjects=[f"{TIMER_PREFIX}.*", f"{DUE_PREFIX}.*"],
        storage=StorageType.FILE,
        allow_msg_schedules=True,
        max_msgs_per_subject=1,
        description="One pending SLA deadline per ticket (message schedules) and the timers that fired.",
    )
    await ensure_stream(js, config)


class Timers:
    """Arm, replace and cancel a ticket's timer. Every call returns once JetStream
    has acknowledged it, so the caller may then ack whatever caused it."""

    def __init__(self, js: JetStreamContext, stream: str) -> None:
        self.js = js
        self.stream = stream

    async def arm(self, ticket_id: UUID, at: datetime, correlation_id: str | None) -> None:
        """Keep one timer for `ticket_id`, due at `at` (replacing any other)."""
        fire_at = at.astimezone(timezone.utc) - timedelta(seconds=LEAD_SECONDS)
        body = {"ticket_id": str(ticket_id), "at": at.astimezone(timezone.utc).isoformat(), "correlation_id": correlation_id}
        await self.js.publish(
            f"{TIMER_PREFIX}.{ticket_id}",
            json.dumps(body).encode(),
            stream=self.stream,
            headers={
                Header.SCHEDULE: f"@at {fire_at.isoformat().replace('+00:00', 'Z')}",
                Header.SCHEDULE_TARGET: f"{DUE_PREFIX}.{ticket_id}",
            },
        )

    async def disarm(self, ticket_id: UUID) -> None:
        """Cancel the ticket's timer and drop its last fired one, so the stream only
        holds tickets that still owe a warning or breach."""
        for prefix in (TIMER_PREFIX, DUE_PREFIX):
            await self.js.purge_stream(self.stream, subject=f"{prefix}.{ticket_id}")
