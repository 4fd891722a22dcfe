"""NATS credentials in settings, and URLs printed without their secrets."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.redaction import redacted
from shared.settings import Settings


@pytest.mark.parametrize(("url", "shown"), [
    ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ("nats://relay:s3cr%40t@nats.internal:4222", "nats://relay:***@nats.internal:4222"),
    ("nats://a-token@nats.internal:4222", "nats://***@nats.internal:4222"),  # NATS reads a lone user as a token
    ("postgresql://app:pw@db:5432/ticketing?schema=t", "postgresql://app:***@db:5432/ticketing?schema=t"),
    ("sqlite:///var/ticketing.sqlite", "sqlite:///var/ticketing.sqlite"),
])
def test_a_url_is_shown_without_its_secret(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_the_password_is_kept_out_of_the_settings_repr() -> None:
    settings = Settings(nats_url="nats://nats:4222", nats_user="relay", nats_password="s3cret")
    assert settings.nats_password is not None and settings.nats_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize("half", [{"nats_user": "relay"}, {"nats_password": "s3cret"}])
def test_a_user_without_a_password_or_the_reverse_stops_at_start(half: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="TICKETING_NATS_USER and TICKETING_NATS_PASSWORD together"):
        Settings(**half)
