"""The webhook subscription list: one row per subscription, for `GET /v1/webhooks` and
for the notifier, which matches every event against it.

Rows are the Webhook aggregate's state after each event, committed with the position
in the notification log. Secrets appear only sealed. Both the API (before listing)
and the notifier (before matching an event) catch the list up themselves, so neither
depends on another process for an answer that includes the latest change.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Column, DateTime, Integer, String, Table, func, select

from shared.domain.webhook import TEXT_MAX, URL_MAX, SigningKey, Spec, Status, Webhook, spec_from_record
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata
from shared.read_db import reading

NAME = "webhook_subscriptions"

subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("url", String(URL_MAX), nullable=False),
    Column("description", String(TEXT_MAX), nullable=False),
    Column("spec", JSON, nullable=False),  # Spec.record()
    Column("keys", JSON, nullable=False),  # [{"sealed": ..., "until": ISO or null}]
    Column("redeliveries", JSON, nullable=False),  # pending redelivery requests, by request id
    Column("disabled_reason", String(1000)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
)


@dataclass(frozen=True)
class Subscription:
    """A subscription as the list holds it."""

    id: UUID
    status: Status
    spec: Spec
    keys: tuple[SigningKey, ...]
    redeliveries: dict[str, dict[str, Any]]
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Subscription:
        return cls(
            id=UUID(row["id"]), status=Status(row["status"]), spec=spec_from_record(row["spec"]),
            keys=tuple(SigningKey(k["sealed"], _instant(k["until"])) for k in row["keys"]),
            redeliveries=row["redeliveries"], disabled_reason=row["disabled_reason"],
            created_at=utc(row["created_at"]), updated_at=utc(row["updated_at"]), version=row["version"],
        )

    @classmethod
    def of_webhook(cls, webhook: Webhook) -> Subscription:
        """The aggregate itself, shaped as the list would hold it."""
        return cls.of(_row(webhook))

    def signing_keys(self, at: datetime) -> list[SigningKey]:
        return [key for key in self.keys if key.signs_at(at)]


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _row(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": str(webhook.id), "status": str(webhook.status), "url": webhook.spec.url,
        "description": webhook.spec.description, "spec": webhook.spec.record(),
        "keys": [{"sealed": k.sealed, "until": k.until.isoformat() if k.until else None} for k in webhook.keys],
        "redeliveries": webhook.redeliveries, "disabled_reason": webhook.disabled_reason,
        "created_at": webhook.created_on, "updated_at": webhook.modified_on, "version": webhook.version,
    }


class WebhookSubscriptionsProjection(AggregateRows):
    name = NAME
    table = subscriptions
    key = "id"
    events = Webhook.Event

    def row(self, webhook: Webhook) -> dict[str, Any]:
        return _row(webhook)

    def catch_up_fully(self, latest: int | None = None) -> int:
        """Apply everything recorded so far (or up to position `latest`, when the caller
        knows the log reaches there); returns the position the rows reflect (beyond the
        saved one when no subscription changed since: the notifier then need not look
        again for events up to there)."""
        if latest is None:
            latest = self.store.recorder.max_notification_id() or 0
        # Subscriptions seldom change and the notifier looks for every batch of events:
        # a look that finds none of ours is one read, with no transaction (catch_up).
        self.catch_up_to(latest)
        return self.seen_up_to

    def page(
        self, status: Status | None, limit: int, offset: int, *, within: frozenset[str] | None = None
    ) -> tuple[list[Subscription], int]:
        """Subscriptions newest first (deleted ones never), and how many there are in all.
        `within`: only those whose customer filter names some of these customers and no
        other. That test runs here rather than in SQL (JSON differs between the databases);
        a deployment has hundreds of subscriptions, not millions."""
        where = [subscriptions.c.status == str(status)] if status else [subscriptions.c.status != str(Status.DELETED)]
        query = select(subscriptions).where(*where).order_by(subscriptions.c.created_at.desc(), subscriptions.c.id)
        with reading(self.engine) as conn:
            if within is None:
                total = conn.scalar(select(func.count()).select_from(subscriptions).where(*where)) or 0
                return [Subscription.of(r) for r in conn.execute(query.limit(limit).offset(offset)).mappings()], total
            found = [s for r in conn.execute(query).mappings() if (s := Subscription.of(r)).spec.filters.within(within)]
        return found[offset:offset + limit], len(found)

    def everything(self) -> dict[UUID, Subscription]:
        """Every subscription, deleted ones included (the notifier tidies up after them)."""
        with reading(self.engine) as conn:
            return {UUID(r["id"]): Subscription.of(r) for r in conn.execute(select(subscriptions)).mappings()}
