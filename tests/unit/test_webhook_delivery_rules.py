"""The notifier's pure rules: when to retry and when to give up, Standard Webhooks
signatures (checked with the `standardwebhooks` package), sealing secrets, and the
settings that configure them."""
from __future__ import annotations

import os
import random
import stat
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from uuid import uuid4

import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.notifier.retry import RetryPolicy, retry_after_seconds
from services.notifier.signing import webhook_headers
from services.notifier.streams import event_subjects
from shared.projections.webhook_deliveries import DeliveryStatus, delivery_id
from shared.settings import Settings
from shared.webhooks import SecretBox, new_secret

SCHEDULE = (5.0, 300.0, 1800.0)
EXACT = RetryPolicy(SCHEDULE, jitter=0.0)
RNG = random.Random(7)


# -- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_only_2xx_delivers(status: int) -> None:
    assert EXACT.judge(1, status, None, RNG).status == DeliveryStatus.DELIVERED


@pytest.mark.parametrize("status", [None, 301, 400, 404, 429, 500, 503])
def test_anything_else_waits_for_the_next_step(status: int | None) -> None:
    verdict = EXACT.judge(2, status, None, RNG)
    assert (verdict.status, verdict.retry_in, verdict.disable) == (DeliveryStatus.PENDING, 300.0, None)


def test_gone_fails_at_once_and_disables() -> None:
    verdict = EXACT.judge(1, 410, None, RNG)
    assert (verdict.status, verdict.disable) == (DeliveryStatus.FAILED, "gone")


def test_the_schedule_exhausted_fails_and_disables() -> None:
    assert EXACT.judge(len(SCHEDULE), 500, None, RNG).status == DeliveryStatus.PENDING
    verdict = EXACT.judge(len(SCHEDULE) + 1, 500, None, RNG)
    assert (verdict.status, verdict.disable) == (DeliveryStatus.FAILED, "retries_exhausted")


def test_jitter_spreads_retries_within_bounds() -> None:
    delays = {RetryPolicy(SCHEDULE, jitter=0.2).judge(1, 500, None, RNG).retry_in for _ in range(200)}
    assert min(delays) >= 4.0 and max(delays) <= 6.0 and len(delays) > 100


def test_retry_after_is_honoured_within_the_longest_step() -> None:
    assert EXACT.judge(1, 503, 60.0, RNG).retry_in == 60.0
    assert EXACT.judge(2, 503, 1.0, RNG).retry_in == 300.0  # never sooner than the schedule
    assert EXACT.judge(1, 429, 86400.0, RNG).retry_in == 1800.0  # never later than its longest step


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(format_datetime(now + timedelta(minutes=2), usegmt=True), now) == 120.0
    assert retry_after_seconds(format_datetime(now - timedelta(minutes=2), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


# -- signatures -----------------------------------------------------------------------------


BODY = '{"id":"e-1","type":"ticket.escalated","data":{"reason":"客户投诉"}}'.encode()


def test_headers_verify_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    headers = webhook_headers("e-1", datetime.now(timezone.utc), BODY, [secret])
    assert StandardWebhook(secret).verify(BODY, headers) == {"id": "e-1", "type": "ticket.escalated",
                                                              "data": {"reason": "客户投诉"}}
    assert headers["webhook-id"] == "e-1"
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(BODY + b" ", headers)


def test_the_signature_is_the_libraries_own() -> None:
    secret, at = new_secret(), datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    expected = StandardWebhook(secret).sign("e-1", at, BODY.decode())
    assert webhook_headers("e-1", at, BODY, [secret])["webhook-signature"] == expected


def test_every_signing_secret_signs_during_a_rotation() -> None:
    old, new = new_secret(), new_secret()
    headers = webhook_headers("e-1", datetime.now(timezone.utc), BODY, [old, new])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert StandardWebhook(old).verify(BODY, headers) == StandardWebhook(new).verify(BODY, headers)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError):
        webhook_headers("e-1", datetime(2026, 11, 20, 9, 0), BODY, [new_secret()])


# -- sealing secrets ------------------------------------------------------------------------


def test_a_sealed_secret_opens_only_with_the_key_and_survives_a_key_rollover() -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = SecretBox([old_key]).seal("whsec_abc")
    assert "whsec_abc" not in sealed
    assert SecretBox([new_key, old_key]).open(sealed) == "whsec_abc"
    with pytest.raises(RuntimeError, match="TICKETING_SECRET_KEY"):
        SecretBox([new_key]).open(sealed)


def test_without_a_configured_key_one_is_generated_once_for_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    sealed = SecretBox.from_settings(settings).seal("whsec_abc")
    assert SecretBox.from_settings(settings).open(sealed) == "whsec_abc"
    assert stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode) == 0o600


# -- settings and names -------------------------------------------------------------------


def test_settings_read_lists_and_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETING_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1, 10.9.0.0/16,crm.internal")
    monkeypatch.setenv("TICKETING_WEBHOOK_RETRY_SCHEDULE", "500ms,5s,5m,2h,1d,30")
    settings = Settings()
    assert settings.webhook_allowed_hosts == ("127.0.0.1", "10.9.0.0/16", "crm.internal")
    assert settings.webhook_retry_schedule == (0.5, 5.0, 300.0, 7200.0, 86400.0, 30.0)
    monkeypatch.setenv("TICKETING_WEBHOOK_RETRY_SCHEDULE", "5 minutes")
    with pytest.raises(ValueError, match="not a duration"):
        Settings()


def test_the_default_schedule_is_the_standard_webhooks_one() -> None:
    assert Settings().webhook_retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)


def test_event_type_patterns_become_nats_subjects() -> None:
    assert event_subjects(("*",)) == ["events.>"]
    assert event_subjects(("sla.*", "ticket.escalated")) == ["events.sla.*", "events.ticket.escalated"]


def test_a_delivery_id_names_one_event_to_one_subscription() -> None:
    subscription = uuid4()
    assert delivery_id("e-1", subscription) == delivery_id("e-1", subscription)
    assert len({delivery_id("e-1", subscription), delivery_id("e-2", subscription), delivery_id("e-1", uuid4()),
                delivery_id("e-1", subscription, "request-1")}) == 4
