"""API keys for tests: issued straight on the store, as `ticketctl keys create` does."""
from __future__ import annotations

from shared.domain.api_key import ApiKey, Role
from shared.keys import Keyring
from shared.store import EventStore

TEST_ACTOR = {"kind": "service", "id": "tests"}


def bearer(keyring: Keyring, role: str, name: str | None = None, *, customers: tuple[str, ...] = (),
           engineer: str | None = None, rate: float | None = None) -> dict[str, str]:
    """Headers carrying a new key of `role`; its holder is recorded as `name` (or the engineer)."""
    _, secret = keyring.issue(name=name or f"test-{role}", role=Role(role), customers=customers, engineer=engineer,
                              rate_per_second=rate, actor=TEST_ACTOR, correlation_id="tests")
    return {"Authorization": f"Bearer {secret}"}


def recorded(store: EventStore) -> int:
    """Events in the store besides the tests' own API keys."""
    return sum(1 for n in store.recorder.select_notifications(1, 100_000) if not n.topic.startswith(_KEY_TOPIC))


_KEY_TOPIC = f"{ApiKey.__module__}:"
