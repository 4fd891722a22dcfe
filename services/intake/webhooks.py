"""The webhooks API: subscribe a URL to event types, manage the subscription, read its
delivery log and ask for redeliveries. Routes are thin: parse, call the webhook
service, shape the answer. The signing secret is in a response twice at most: when
the subscription is made and when it is rotated.

No `from __future__ import annotations` here: the routes are defined inside
`webhooks_router` and their annotations use its local dependency, which FastAPI
could not resolve from postponed (string) annotations.
"""
from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, StringConstraints

from services.intake.access import Context, Gate
from services.intake.schemas import Instant, Name, Offset, Strict
from shared.domain.errors import WebhookNotFound
from shared.domain.ticket import Severity
from shared.domain.webhook import EVENT_TYPE_PATTERN, EVENT_TYPES_MAX, FILTER_VALUES_MAX, TEXT_MAX, URL_MAX, Status, Webhook
from shared.projections.webhook_deliveries import Attempt, Delivery, DeliveryStatus
from shared.projections.webhook_subscriptions import Subscription
from shared.webhooks import Webhooks

Url = Annotated[str, StringConstraints(min_length=1, max_length=URL_MAX)]
EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN)]
Description = Annotated[str, StringConstraints(max_length=TEXT_MAX)]
MAX_OVERLAP_SECONDS = 30 * 86400


class WebhookFilters(Strict):
    """Only events of tickets matching every non-empty list (one value of each) are sent."""

    customers: list[Name] = Field([], max_length=FILTER_VALUES_MAX)
    severities: list[Severity] = Field([], max_length=FILTER_VALUES_MAX)
    regions: list[Name] = Field([], max_length=FILTER_VALUES_MAX, description="The site's region, else the contract's.")


class WebhookCreate(Strict):
    url: Url = Field(description="Where to POST: https:// (or http://). Must not resolve to a private address.")
    event_types: list[EventType] = Field(
        min_length=1, max_length=EVENT_TYPES_MAX,
        description="Event types such as ticket.escalated or sla.breached, a family such as sla.*, or * for all.",
    )
    filters: WebhookFilters = WebhookFilters()
    description: Description = ""


class WebhookUpdate(Strict):
    """The terms to change; omitted ones stay as they are."""

    url: Url | None = None
    event_types: list[EventType] | None = Field(None, min_length=1, max_length=EVENT_TYPES_MAX)
    filters: WebhookFilters | None = None
    description: Description | None = None
    expected_version: int | None = Field(None, ge=1, description="Refuse (409) unless the subscription is at this version.")


class SigningSecretRead(BaseModel):
    """A secret that signs deliveries (never its value): the current one has no expiry."""

    expires_at: datetime | None


class WebhookRead(BaseModel):
    id: UUID
    url: str
    event_types: list[str]
    filters: WebhookFilters
    description: str
    status: Status
    disabled_reason: str | None
    signing_secrets: list[SigningSecretRead]
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of_webhook(cls, webhook: Webhook) -> "WebhookRead":
        return cls.of(Subscription.of_webhook(webhook))

    @classmethod
    def of(cls, subscription: Subscription) -> "WebhookRead":
        spec = subscription.spec
        return cls(
            id=subscription.id, url=spec.url, event_types=list(spec.event_types),
            filters=WebhookFilters.model_validate(spec.filters.record()), description=spec.description,
            status=subscription.status, disabled_reason=subscription.disabled_reason,
            signing_secrets=[SigningSecretRead(expires_at=k.until) for k in subscription.keys],
            created_at=subscription.created_at, updated_at=subscription.updated_at, version=subscription.version,
        )


class WebhookWithSecret(WebhookRead):
    secret: str = Field(description="whsec_…: verify our signatures with it. Shown this once; store it now.")

    @classmethod
    def of_new_secret(cls, webhook: Webhook, secret: str) -> "WebhookWithSecret":
        return cls(**WebhookRead.of_webhook(webhook).model_dump(), secret=secret)


class RotateSecret(Strict):
    overlap_seconds: int | None = Field(
        None, ge=0, le=MAX_OVERLAP_SECONDS,
        description="How long the previous secret still signs alongside the new one (default: the service's, one day).",
    )


class Redeliver(Strict):
    """Exactly one of the two."""

    event_id: UUID | None = Field(None, description="Send this logged message again.")
    since: Instant | None = Field(None, description="Send every wanted event from this instant on again.")


class RedeliveryAccepted(BaseModel):
    request_id: str


class AttemptRead(BaseModel):
    number: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    retry_at: datetime | None


class DeliveryRead(BaseModel):
    id: UUID
    event_id: str
    event_type: str
    event_time: datetime
    status: DeliveryStatus
    redelivery_request: str | None
    next_attempt_at: datetime | None
    queued_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptRead]

    @classmethod
    def of(cls, delivery: Delivery, attempts: list[Attempt]) -> "DeliveryRead":
        return cls(
            id=delivery.id, event_id=delivery.event_id, event_type=delivery.event_type, event_time=delivery.event_time,
            status=delivery.status, redelivery_request=delivery.request_id, next_attempt_at=delivery.next_attempt_at,
            queued_at=delivery.queued_at, finished_at=delivery.finished_at,
            attempts=[AttemptRead(**vars(a)) for a in attempts],
        )


def webhooks_router(webhooks: Webhooks, gate: Gate) -> APIRouter:
    """The webhook routes. An integration key manages only subscriptions limited to its
    own customers: it sees no other, and every one it makes or changes is so limited."""
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
    Ctx = gate.context("webhooks:write")
    Reader = gate.context("webhooks:read")

    def owned(webhook_id: UUID, ctx: Context) -> Webhook:
        webhook = webhooks.get(webhook_id)
        if not webhook.spec.filters.within(ctx.customers):
            raise WebhookNotFound(str(webhook_id))
        return webhook

    Limit = Annotated[int, Query(ge=1, le=500)]

    @router.post("", status_code=201, response_model=WebhookWithSecret)
    def subscribe(body: WebhookCreate, ctx: Ctx, response: Response) -> WebhookWithSecret:
        """Subscribe a URL. The answer carries the signing secret, which is never shown again."""
        values = body.model_dump(mode="json")
        values["filters"]["customers"] = _scoped(values["filters"]["customers"], ctx)
        webhook, secret = webhooks.subscribe(values, actor=ctx.actor, correlation_id=ctx.correlation_id)
        response.headers["Location"] = f"/v1/webhooks/{webhook.id}"
        return WebhookWithSecret.of_new_secret(webhook, secret)

    @router.get("")
    def list_webhooks(ctx: Reader, status: Status | None = None, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        """Subscriptions, newest first (deleted ones are gone)."""
        if status == Status.DELETED:
            raise RequestValidationError([{"loc": ("query", "status"), "type": "value_error",
                                           "msg": "deleted subscriptions are not listed"}])
        found, total = webhooks.page(status, limit, offset, within=ctx.customers)
        return {"webhooks": [WebhookRead.of(s) for s in found], "total": total, "limit": limit, "offset": offset}

    @router.get("/{webhook_id}", response_model=WebhookRead)
    def get_webhook(webhook_id: UUID, ctx: Reader) -> WebhookRead:
        return WebhookRead.of_webhook(owned(webhook_id, ctx))

    @router.patch("/{webhook_id}", response_model=WebhookRead)
    def update_webhook(webhook_id: UUID, body: WebhookUpdate, ctx: Ctx) -> WebhookRead:
        """Change the URL, event types, filters or description; only what differs is recorded."""
        owned(webhook_id, ctx)
        values = body.model_dump(mode="json", exclude={"expected_version"}, exclude_none=True)
        if "filters" in values:
            values["filters"]["customers"] = _scoped(values["filters"]["customers"], ctx)
        webhook = webhooks.change(webhook_id, values, expected_version=body.expected_version,
                                  actor=ctx.actor, correlation_id=ctx.correlation_id)
        return WebhookRead.of_webhook(webhook)

    @router.delete("/{webhook_id}", status_code=204)
    def delete_webhook(webhook_id: UUID, ctx: Ctx) -> Response:
        """Stop for good: deliveries not yet made are dropped."""
        owned(webhook_id, ctx)
        webhooks.delete(webhook_id, actor=ctx.actor, correlation_id=ctx.correlation_id)
        return Response(status_code=204)

    @router.post("/{webhook_id}/pause", response_model=WebhookRead)
    def pause(webhook_id: UUID, ctx: Ctx) -> WebhookRead:
        """Hold deliveries: they queue up and go out on resume."""
        owned(webhook_id, ctx)
        return WebhookRead.of_webhook(webhooks.pause(webhook_id, actor=ctx.actor, correlation_id=ctx.correlation_id))

    @router.post("/{webhook_id}/resume", response_model=WebhookRead)
    def resume(webhook_id: UUID, ctx: Ctx) -> WebhookRead:
        """Deliver again, after a pause or after the notifier disabled the subscription."""
        owned(webhook_id, ctx)
        return WebhookRead.of_webhook(webhooks.resume(webhook_id, actor=ctx.actor, correlation_id=ctx.correlation_id))

    @router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret)
    def rotate_secret(webhook_id: UUID, ctx: Ctx, body: RotateSecret | None = None) -> WebhookWithSecret:
        """A new signing secret, shown this once. Until the overlap ends, deliveries carry a
        signature by each secret, so a receiver can switch whenever it likes."""
        owned(webhook_id, ctx)
        seconds = body.overlap_seconds if body else None
        overlap = None if seconds is None else timedelta(seconds=seconds)
        webhook, secret = webhooks.rotate_secret(webhook_id, overlap=overlap, actor=ctx.actor,
                                                 correlation_id=ctx.correlation_id)
        return WebhookWithSecret.of_new_secret(webhook, secret)

    @router.get("/{webhook_id}/deliveries")
    def deliveries(
        webhook_id: UUID, ctx: Reader, status: DeliveryStatus | None = None, limit: Limit = 50, offset: Offset = 0
    ) -> dict[str, Any]:
        """The delivery log, newest first: each delivery with every attempt (status code,
        latency, error, when the next one is due)."""
        owned(webhook_id, ctx)
        found, total = webhooks.delivery_page(webhook_id, status, limit, offset)
        return {"deliveries": [DeliveryRead.of(d, a) for d, a in found], "total": total, "limit": limit, "offset": offset}

    @router.post("/{webhook_id}/redeliver", status_code=202, response_model=RedeliveryAccepted)
    def redeliver(webhook_id: UUID, body: Redeliver, ctx: Ctx) -> RedeliveryAccepted:
        """Send one logged message again (same webhook-id), or every event the subscription
        wants since an instant. The notifier queues them within a second or so."""
        if (body.event_id is None) == (body.since is None):
            raise RequestValidationError([{"loc": ("body", "event_id"), "type": "value_error",
                                           "msg": "give either event_id or since"}])
        owned(webhook_id, ctx)
        request_id = webhooks.request_redelivery(
            webhook_id, event_id=str(body.event_id) if body.event_id else None, since=body.since,
            actor=ctx.actor, correlation_id=ctx.correlation_id,
        )
        return RedeliveryAccepted(request_id=request_id)

    return router


def _scoped(customers: list[str], ctx: Context) -> list[str]:
    """The customers filter a key may set: for an integration key, its own customers
    (all of them when it names none); anyone else sets what they like."""
    if ctx.customers is None:
        return customers
    for customer in customers:
        ctx.serve(customer, field="filters.customers")
    return customers or sorted(ctx.customers)
