"""The delivery log: every delivery of an event to a webhook subscription, and every
attempt at it (status code, latency, error, when the next one is due).

Not derived from the event store: the notifier writes it as it works, and the API
reads it. A delivery row is written when the notifier queues the delivery (before
the message reaches NATS), and each attempt's outcome is committed before the NATS
message is acknowledged, so the log never shows less than what happened.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from sqlalchemy import Column, DateTime, Engine, Float, Index, Integer, String, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite

from shared.projections.tracking import create_tables, metadata
from shared.projections.webhook_subscriptions import utc
from shared.read_db import reading

ERROR_MAX = 500


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # queued, out, or waiting to retry
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # 410 Gone, or the last retry failed
    CANCELLED = "cancelled"  # the subscription was deleted first


deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subscription_id", String(36), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("stream_seq", Integer, nullable=False),  # where the event sits in the EVENTS stream
    Column("request_id", String(36)),  # the redelivery request that queued it; None for the first delivery
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_webhook_deliveries_subscription", "subscription_id", "queued_at"),
    Index("ix_webhook_deliveries_event", "subscription_id", "event_id"),
)

attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(36), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Float, nullable=False),
    Column("error", String(ERROR_MAX)),
    Column("retry_at", DateTime(timezone=True)),
)


def delivery_id(event_id: str, subscription_id: UUID, request_id: str | None = None) -> UUID:
    """The same event to the same subscription is the same delivery (a repeated fan-out
    adds nothing); a redelivery request makes a new one."""
    name = f"urn:ticketing:webhook-delivery:{event_id}:{subscription_id}"
    return uuid5(NAMESPACE_URL, f"{name}:{request_id}" if request_id else name)


@dataclass(frozen=True)
class Planned:
    """A delivery about to be queued."""

    id: UUID
    subscription_id: UUID
    event_id: str
    event_type: str
    event_time: datetime
    stream_seq: int
    request_id: str | None = None


@dataclass(frozen=True)
class Attempt:
    number: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    retry_at: datetime | None  # when the next attempt is due; None when this one settled it


@dataclass(frozen=True)
class Outcome:
    """An attempt, and the delivery's status after it."""

    delivery_id: UUID
    attempt: Attempt
    status: DeliveryStatus


@dataclass(frozen=True)
class Delivery:
    id: UUID
    subscription_id: UUID
    event_id: str
    event_type: str
    event_time: datetime
    stream_seq: int
    request_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    queued_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Delivery:
        return cls(
            id=UUID(row["id"]), subscription_id=UUID(row["subscription_id"]), event_id=row["event_id"],
            event_type=row["event_type"], event_time=utc(row["event_time"]), stream_seq=row["stream_seq"],
            request_id=row["request_id"], status=DeliveryStatus(row["status"]), attempts=row["attempts"],
            next_attempt_at=_maybe_utc(row["next_attempt_at"]), queued_at=utc(row["queued_at"]),
            finished_at=_maybe_utc(row["finished_at"]),
        )


def _maybe_utc(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None


class DeliveryLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine, [deliveries, attempts])
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert

    # -- written by the notifier ---------------------------------------------------

    def enqueue(self, planned: Iterable[Planned], at: datetime) -> None:
        """Record deliveries as pending; one already recorded (a repeated fan-out) stays as it is."""
        rows = [
            {"id": str(p.id), "subscription_id": str(p.subscription_id), "event_id": p.event_id,
             "event_type": p.event_type, "event_time": p.event_time, "stream_seq": p.stream_seq,
             "request_id": p.request_id, "status": DeliveryStatus.PENDING.value, "attempts": 0,
             "next_attempt_at": None, "queued_at": at, "finished_at": None}
            for p in planned
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(self._insert(deliveries).on_conflict_do_nothing(index_elements=["id"]), rows)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Attempts and where each leaves its delivery, all in one transaction. Only a
        pending delivery moves: an attempt still out when its subscription was deleted is
        logged, but does not bring the cancelled delivery back to pending."""
        if not outcomes:
            return
        with self.engine.begin() as conn:
            conn.execute(attempts.insert(), [
                {"delivery_id": str(o.delivery_id), "number": o.attempt.number,
                 "attempted_at": o.attempt.attempted_at, "status_code": o.attempt.status_code,
                 "latency_ms": o.attempt.latency_ms, "retry_at": o.attempt.retry_at,
                 "error": o.attempt.error[:ERROR_MAX] if o.attempt.error else None}
                for o in outcomes
            ])
            conn.execute(
                deliveries.update().where(
                    deliveries.c.id == bindparam("delivery"), deliveries.c.status == DeliveryStatus.PENDING.value
                ).values(
                    status=bindparam("new_status"), attempts=bindparam("number"),
                    next_attempt_at=bindparam("retry_at"), finished_at=bindparam("finished"),
                ),
                [{"delivery": str(o.delivery_id), "new_status": o.status.value, "number": o.attempt.number,
                  "retry_at": o.attempt.retry_at,
                  "finished": o.attempt.attempted_at if o.status != DeliveryStatus.PENDING else None}
                 for o in outcomes],
            )

    def cancel_pending(self, subscription_id: UUID, at: datetime) -> None:
        """The subscription was deleted: what it still had pending will never be sent."""
        with self.engine.begin() as conn:
            conn.execute(deliveries.update().where(
                deliveries.c.subscription_id == str(subscription_id),
                deliveries.c.status == DeliveryStatus.PENDING.value,
            ).values(status=DeliveryStatus.CANCELLED.value, next_attempt_at=None, finished_at=at))

    # -- read by both ----------------------------------------------------------------

    def get(self, delivery_id: UUID) -> Delivery | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.id == str(delivery_id))).mappings().first()
        return Delivery.of(row) if row else None

    def latest(self, subscription_id: UUID, event_id: str) -> Delivery | None:
        """The most recent delivery of an event to a subscription."""
        with reading(self.engine) as conn:
            row = conn.execute(
                select(deliveries)
                .where(deliveries.c.subscription_id == str(subscription_id), deliveries.c.event_id == event_id)
                .order_by(deliveries.c.queued_at.desc()).limit(1)
            ).mappings().first()
        return Delivery.of(row) if row else None

    def page(
        self, subscription_id: UUID, status: DeliveryStatus | None, limit: int, offset: int
    ) -> tuple[list[tuple[Delivery, list[Attempt]]], int]:
        """A subscription's deliveries newest first, each with its attempts in order."""
        where = [deliveries.c.subscription_id == str(subscription_id)]
        if status is not None:
            where.append(deliveries.c.status == status.value)
        with reading(self.engine) as conn:
            total = conn.scalar(select(func.count()).select_from(deliveries).where(*where)) or 0
            rows = conn.execute(
                select(deliveries).where(*where)
                .order_by(deliveries.c.queued_at.desc(), deliveries.c.id).limit(limit).offset(offset)
            ).mappings().all()
            found = [Delivery.of(r) for r in rows]
            tried = conn.execute(
                select(attempts).where(attempts.c.delivery_id.in_([str(d.id) for d in found]))
                .order_by(attempts.c.delivery_id, attempts.c.number, attempts.c.id)
            ).mappings().all()
        by_delivery: dict[str, list[Attempt]] = {}
        for a in tried:
            by_delivery.setdefault(a["delivery_id"], []).append(Attempt(
                number=a["number"], attempted_at=utc(a["attempted_at"]), status_code=a["status_code"],
                latency_ms=a["latency_ms"], error=a["error"], retry_at=_maybe_utc(a["retry_at"]),
            ))
        return [(d, by_delivery.get(str(d.id), [])) for d in found], total
