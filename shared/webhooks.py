"""Webhook subscriptions: the application service the API and the notifier go through.

Subscribing makes the signing secret (`whsec_…`, shown to the subscriber once) and
seals it with the service key before anything is recorded; the URL is checked
against the SSRF guard first, so a refused request records nothing. Commands that
may be repeated (pause, resume, a notifier's disable) record nothing the second time.
"""
from __future__ import annotations

import base64
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError
from sqlalchemy import Engine

from shared.clock import Clock
from shared.domain.errors import DeliveryNotFound, WebhookDestinationRefused, WebhookNotFound, WebhookVersionConflict
from shared.domain.ticket import Actor
from shared.domain.webhook import Destinations, IPAddress, Spec, Status, Webhook, check_url, parse_address
from shared.projections.webhook_deliveries import Attempt, Delivery, DeliveryLog, DeliveryStatus
from shared.projections.webhook_subscriptions import Subscription, WebhookSubscriptionsProjection
from shared.settings import Settings
from shared.store import EventStore

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 random bytes
NOTIFIER = {"kind": "service", "id": "notifier"}
_SAVE_ATTEMPTS = 20


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Seals secrets with the service key(s) (Fernet: AES-128-CBC and HMAC-SHA256). With
    several keys the first seals and any opens, so a new key is rolled in by putting it
    first and the old one leaves once every subscription has rotated its secret."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_key is not None:
            return cls([k.strip() for k in settings.secret_key.get_secret_value().split(",") if k.strip()])
        return cls([_key_file(settings.data_dir / "secret.key")])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise RuntimeError("a webhook secret does not open with TICKETING_SECRET_KEY: was the key changed?") from None


def _key_file(path: Path) -> str:
    """The generated key for one machine's processes (`make run`): created once, readable
    by its owner only. Several machines must share TICKETING_SECRET_KEY instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole under a private name, then linked into place: a process starting at
        # the same moment sees either no key or a complete one, never an empty file.
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(Fernet.generate_key().decode())
        try:
            os.link(draft, path)
            log.warning("generated a webhook secret key in %s; set TICKETING_SECRET_KEY in production", path)
        except FileExistsError:
            pass  # another process's key won; use it
        finally:
            draft.unlink()
    return path.read_text().strip()


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to now (none if it does not resolve)."""
    try:
        return addresses_of(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except (socket.gaierror, UnicodeError):
        return []


def addresses_of(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    """The distinct addresses of getaddrinfo's answer, in its order."""
    return list(dict.fromkeys(parse_address(str(info[4][0])) for info in infos))


def default_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


class Webhooks:
    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        box: SecretBox,
        destinations: Destinations,
        *,
        subscriptions: WebhookSubscriptionsProjection,
        deliveries: DeliveryLog,
        secret_overlap: timedelta,
        resolver: Callable[[str, int], list[IPAddress]] = resolve,
    ) -> None:
        self.store = store
        self.clock = clock
        self.box = box
        self.destinations = destinations
        self.subscriptions = subscriptions
        self.deliveries = deliveries
        self.secret_overlap = secret_overlap
        self.resolver = resolver

    @classmethod
    def configure(cls, settings: Settings, store: EventStore, engine: Engine, clock: Clock) -> Webhooks:
        return cls(
            store, clock, SecretBox.from_settings(settings), Destinations(settings.webhook_allowed_hosts),
            subscriptions=WebhookSubscriptionsProjection(store, engine), deliveries=DeliveryLog(engine),
            secret_overlap=timedelta(seconds=settings.webhook_secret_overlap),
        )

    # -- reading ---------------------------------------------------------------

    def get(self, webhook_id: UUID) -> Webhook:
        """A live subscription (a deleted one is not found)."""
        try:
            webhook = self.store.repository.get(webhook_id)
        except AggregateNotFoundError:
            raise WebhookNotFound(str(webhook_id)) from None
        if not isinstance(webhook, Webhook) or webhook.status == Status.DELETED:
            raise WebhookNotFound(str(webhook_id))
        return webhook

    def page(
        self, status: Status | None, limit: int, offset: int, *, within: frozenset[str] | None = None
    ) -> tuple[list[Subscription], int]:
        """The subscription list, caught up first so it shows every change recorded so far;
        with `within`, only subscriptions limited to some of those customers."""
        self.subscriptions.catch_up_fully()
        return self.subscriptions.page(status, limit, offset, within=within)

    def delivery_page(
        self, webhook_id: UUID, status: DeliveryStatus | None, limit: int, offset: int
    ) -> tuple[list[tuple[Delivery, list[Attempt]]], int]:
        self.get(webhook_id)
        return self.deliveries.page(webhook_id, status, limit, offset)

    # -- the subscriber's commands ----------------------------------------------------

    def subscribe(self, values: Mapping[str, Any], *, actor: Actor, correlation_id: str) -> tuple[Webhook, str]:
        """A new subscription and its secret, in clear this once."""
        spec = Spec.of(values)
        self.check_destination(spec.url)
        secret = new_secret()
        webhook = Webhook.subscribe(uuid4(), spec, sealed_secret=self.box.seal(secret), at=self.clock.now(),
                                    actor=actor, correlation_id=correlation_id)
        self.store.save(webhook)
        return webhook, secret

    def change(
        self, webhook_id: UUID, values: Mapping[str, Any], *, expected_version: int | None, actor: Actor, correlation_id: str
    ) -> Webhook:
        def change(webhook: Webhook, at: datetime) -> None:
            if expected_version is not None and webhook.version != expected_version:
                raise WebhookVersionConflict(expected_version, webhook.version)
            spec = webhook.spec.amended(values)
            if spec.url != webhook.spec.url:
                self.check_destination(spec.url)
            webhook.change(spec, at=at, actor=actor, correlation_id=correlation_id)

        return self._act(webhook_id, change)

    def pause(self, webhook_id: UUID, *, actor: Actor, correlation_id: str) -> Webhook:
        return self._act(webhook_id, lambda w, at: w.pause(at=at, actor=actor, correlation_id=correlation_id))

    def resume(self, webhook_id: UUID, *, actor: Actor, correlation_id: str) -> Webhook:
        return self._act(webhook_id, lambda w, at: w.resume(at=at, actor=actor, correlation_id=correlation_id))

    def delete(self, webhook_id: UUID, *, actor: Actor, correlation_id: str) -> None:
        self._act(webhook_id, lambda w, at: w.delete(at=at, actor=actor, correlation_id=correlation_id))

    def rotate_secret(
        self, webhook_id: UUID, *, overlap: timedelta | None, actor: Actor, correlation_id: str
    ) -> tuple[Webhook, str]:
        """A new secret, in clear this once; the previous ones sign alongside it for `overlap`."""
        secret = new_secret()
        sealed = self.box.seal(secret)
        keep = self.secret_overlap if overlap is None else overlap
        webhook = self._act(webhook_id, lambda w, at: w.rotate_secret(
            sealed, overlap=keep, at=at, actor=actor, correlation_id=correlation_id))
        return webhook, secret

    def request_redelivery(
        self, webhook_id: UUID, *, event_id: str | None, since: datetime | None, actor: Actor, correlation_id: str
    ) -> str:
        """Ask the notifier to send one logged message again, or everything the subscription
        wants since an instant; returns the request id (the notifier records when it is queued)."""
        if event_id is not None and self.deliveries.latest(webhook_id, event_id) is None:
            self.get(webhook_id)  # an unknown subscription is the better answer
            raise DeliveryNotFound(str(webhook_id), event_id)
        request_id = str(uuid4())
        since = since.astimezone(timezone.utc) if since else None
        self._act(webhook_id, lambda w, at: w.request_redelivery(
            request_id, event_id=event_id, since=since, at=at, actor=actor, correlation_id=correlation_id))
        return request_id

    # -- the notifier's commands -----------------------------------------------------

    def disable(self, webhook_id: UUID, *, reason: str, detail: str, event_id: str, correlation_id: str) -> bool:
        """Stop deliveries after a 410 or the last retry; False if there was nothing to stop."""
        disabled = False

        def disable(webhook: Webhook, at: datetime) -> None:
            nonlocal disabled
            disabled = webhook.disable(reason=reason, detail=detail, event_id=event_id, at=at,
                                       actor=NOTIFIER, correlation_id=correlation_id)

        self._act(webhook_id, disable)
        return disabled

    def complete_redelivery(self, webhook_id: UUID, request_id: str, *, enqueued: int) -> None:
        self._act(webhook_id, lambda w, at: w.complete_redelivery(
            request_id, enqueued=enqueued, at=at, actor=NOTIFIER, correlation_id=request_id))

    # -- rules and plumbing -----------------------------------------------------

    def check_destination(self, url: str) -> None:
        """Refuse a URL resolving to a loopback, private, link-local or metadata address
        (checked again by the notifier before each attempt: DNS answers change)."""
        host = check_url(url)
        refusal = self.destinations.refusal(host, self.resolver(host, default_port(url)))
        if refusal:
            raise WebhookDestinationRefused("url", refusal)

    def _act(self, webhook_id: UUID, command: Callable[[Webhook, datetime], Any]) -> Webhook:
        for _ in range(_SAVE_ATTEMPTS):
            webhook = self.get(webhook_id)
            # A replica whose clock lags must not record an event before the one it follows.
            command(webhook, max(self.clock.now(), webhook.modified_on))
            try:
                self.store.save(webhook)
            except RecordConflictError:
                continue  # another writer saved first: decide again on its version
            return webhook
        raise RuntimeError(f"webhook subscription {webhook_id} kept changing; gave up after {_SAVE_ATTEMPTS} attempts")
