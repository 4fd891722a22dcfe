"""Standard Webhooks 1.0 headers: what lets a receiver trust a delivery is ours.

The signature is the base64 HMAC-SHA256, keyed by the secret's decoded bytes, of
`<webhook-id>.<webhook-timestamp>.<body>`. During a secret rotation a delivery carries
one signature per signing secret, space-separated; a receiver accepts any one.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime

from shared.webhooks import SECRET_PREFIX

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
USER_AGENT = "ticketing-webhooks/1.0"


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(msg_id: str, at: datetime, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The headers of one attempt: `webhook-id` is the event's id, the same on every retry
    (the receiver's idempotency key); the timestamp is the attempt's own."""
    if at.tzinfo is None:
        raise ValueError("webhook timestamps need a timezone-aware instant")
    timestamp = int(at.timestamp())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret, msg_id, timestamp, body) for secret in secrets),
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
    }
