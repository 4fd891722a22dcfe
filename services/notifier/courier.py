"""One delivery attempt, from a message of the work queue to its recorded outcome.

A message handed out before is checked against the delivery log first: it can come
back after its outcome was recorded (a crash before the ack) or before its retry was
due (a crash, or the ack wait), and neither sends anything. Otherwise the attempt is
signed with every secret that signs now, sent, judged by the retry policy, and
recorded, and only then is the message acknowledged or put back with its delay.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from nats.aio.msg import Msg

from services.notifier.directory import Directory
from services.notifier.failures import TRANSIENT
from services.notifier.outcomes import OutcomeWriter
from services.notifier.retry import RetryPolicy, Verdict
from services.notifier.sender import Answer, Sender
from services.notifier.signing import webhook_headers
from services.notifier.streams import DELIVERY_HEADER, EVENT_HEADER
from shared.clock import Clock
from shared.domain.errors import WebhookNotFound
from shared.domain.webhook import Status
from shared.projections.webhook_deliveries import Attempt, DeliveryLog, DeliveryStatus, Outcome
from shared.projections.webhook_subscriptions import Subscription
from shared.webhooks import SecretBox, Webhooks

log = logging.getLogger(__name__)

# A retry JetStream hands back this little before its due instant is simply made:
# another round trip would only add latency (the server's and our clocks differ a bit).
EARLY_TOLERANCE = timedelta(milliseconds=250)


@dataclass(frozen=True)
class Progress:
    """Where a delivery stands, as far as the next attempt is concerned."""

    id: UUID
    event_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None


class Courier:
    def __init__(
        self,
        directory: Directory,
        deliveries: DeliveryLog,
        webhooks: Webhooks,
        sender: Sender,
        box: SecretBox,
        policy: RetryPolicy,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._directory = directory
        self._log = deliveries
        self._outcomes = OutcomeWriter(deliveries)
        self._webhooks = webhooks
        self._sender = sender
        self._box = box
        self._policy = policy
        self._clock = clock  # real time: receivers reject signatures with a stale webhook-timestamp
        self._rng = rng or random.Random()

    async def handle(self, subscription_id: UUID, msg: Msg) -> None:
        try:
            await self._handle(subscription_id, msg)
        except TRANSIENT as error:
            # Not acknowledged: JetStream hands the message over again after the ack wait.
            log.warning("delivery to subscription %s interrupted (%r); it will be retried", subscription_id, error)

    async def _progress(self, msg: Msg) -> Progress | None:
        headers = msg.headers or {}
        delivery_id = UUID(headers[DELIVERY_HEADER])
        if msg.metadata.num_delivered == 1:
            # Never handed out before, so the log holds it as queued: no need to read it.
            return Progress(delivery_id, headers[EVENT_HEADER], DeliveryStatus.PENDING, 0, None)
        logged = await asyncio.to_thread(self._log.get, delivery_id)
        if logged is None:
            return None
        return Progress(logged.id, logged.event_id, logged.status, logged.attempts, logged.next_attempt_at)

    async def _handle(self, subscription_id: UUID, msg: Msg) -> None:
        delivery = await self._progress(msg)
        subscription = self._directory.get(subscription_id)
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            await msg.ack()  # settled before a crash let it come back (or never ours to send)
            return
        if subscription is None or subscription.status == Status.DELETED:
            await msg.term()  # the lanes tidy up a deleted subscription's log
            return
        if subscription.status != Status.ACTIVE:
            await msg.nak()  # paused or disabled meanwhile: it waits in the queue for a resume
            return
        now = self._clock.now()
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + EARLY_TOLERANCE:
            await msg.nak(delay=(delivery.next_attempt_at - now).total_seconds())  # back early: keep the schedule
            return
        answer = await self._send(subscription, delivery, msg.data)
        attempt_number = delivery.attempts + 1
        verdict = self._policy.judge(attempt_number, answer.status_code, answer.retry_after, self._rng)
        await self._record(subscription, delivery, attempt_number, answer, verdict)
        if verdict.status == DeliveryStatus.PENDING:
            await msg.nak(delay=verdict.retry_in)
        else:
            await msg.ack()

    async def _send(self, subscription: Subscription, delivery: Progress, body: bytes) -> Answer:
        now = self._clock.now()
        secrets = [self._box.open(key.sealed) for key in subscription.signing_keys(now)]
        headers = webhook_headers(delivery.event_id, now, body, secrets)
        return await self._sender.post(subscription.spec.url, headers, body, now)

    async def _record(
        self, subscription: Subscription, delivery: Progress, number: int, answer: Answer, verdict: Verdict
    ) -> None:
        now = self._clock.now()
        retry_at = now + timedelta(seconds=verdict.retry_in) if verdict.retry_in is not None else None
        if verdict.disable:
            # Before the log: should we crash in between, the attempt is made again, which
            # is better than a subscription left enabled after the receiver said it is gone.
            await self._disable(subscription, delivery, verdict.disable, f"attempt {number}: {_outcome(answer)}")
        attempt = Attempt(number, now, answer.status_code, answer.latency_ms, answer.error, retry_at)
        await self._outcomes.record(Outcome(delivery.id, attempt, verdict.status))
        if verdict.status != DeliveryStatus.DELIVERED:
            log.info("delivery %s of %s to %s: attempt %d %s", delivery.id, delivery.event_id, subscription.id,
                     number, _outcome(answer))

    async def _disable(self, subscription: Subscription, delivery: Progress, reason: str, detail: str) -> None:
        try:
            disabled = await asyncio.to_thread(
                self._webhooks.disable, subscription.id, reason=reason, detail=detail,
                event_id=delivery.event_id, correlation_id=str(delivery.id),
            )
        except WebhookNotFound:
            return  # deleted meanwhile: nothing left to disable
        if disabled:
            log.warning("webhook subscription %s disabled: %s (%s)", subscription.id, reason, detail)


def _outcome(answer: Answer) -> str:
    return f"HTTP {answer.status_code}" if answer.status_code is not None else str(answer.error)
