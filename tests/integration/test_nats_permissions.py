"""The services on a nats-server running deploy/nats/nats-server.conf, each as its own
user: nobody gets in without the right password; every service does all its real work
(run by its real start-up function) without one refused operation; and a service
cannot do another's job, such as publishing events or using another's consumer."""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
import nats.errors
import pytest
from cryptography.fernet import Fernet
from nats.aio.client import Client
from pydantic import SecretStr

from services.dispatch.__main__ import consume
from services.dispatch.wiring import dispatch
from services.notifier.__main__ import notify
from services.relay.__main__ import relay
from services.sla_clock.__main__ import SlaClockSettings, keep_time
from shared.bootstrap import intake
from shared.bus import connect, ensure_event_stream
from shared.event_format import history_entry
from shared.nats_server import free_port, start_nats_server
from shared.process import with_nats
from shared.settings import ROOT, Settings
from shared.sla.policy import load_policy

pytestmark = pytest.mark.nats

CONFIG = ROOT / "deploy" / "nats" / "nats-server.conf"
POLICIES = ROOT / "tests" / "policies"
USERS = ("relay", "sla_clock", "dispatch", "notifier")
CLIENT = {"kind": "client", "id": "zabbix"}
ENGINEER = {"kind": "engineer", "id": "E-HZ-01"}
SUBSCRIBER = {"kind": "client", "id": "webhook-owner"}


@dataclass(frozen=True)
class SecuredNats:
    url: str
    passwords: dict[str, str]
    log: Path

    async def connect(self, user: str) -> Client:
        return await connect(self.url, user=user, password=SecretStr(self.passwords[user]))

    def settings(self, user: str, kind: type[Settings] = Settings, **values: Any) -> Any:
        """A service's settings (of `kind`), connecting as `user`."""
        return kind(nats_url=self.url, nats_user=user, nats_password=self.passwords[user], **values)

    def refusals(self) -> list[str]:
        """What the server refused any client, as it logged it."""
        return [line for line in self.log.read_text().splitlines() if "Violation" in line]

    def refused(self, user: str, what: str, subject: str) -> bool:
        """Whether the server logged refusing `user` a "Publish" or "Subscription" to `subject`."""
        return any(f'user:{user}"' in line and f'{what} Violation - Subject "{subject}"' in line
                   for line in self.refusals())


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredNats]:
    passwords = {user: secrets.token_urlsafe(16) for user in USERS}
    port, log = free_port(), tmp_path / "nats-server.log"
    # Quoted, as deploy/nats/README.md says: the server parses a variable's value as
    # configuration, and would read some passwords as numbers or fail on a leading '-'.
    server = start_nats_server(
        tmp_path / "jetstream", port, log_file=log, config=CONFIG,
        env={f"NATS_{user.upper()}_PASSWORD": f'"{password}"' for user, password in passwords.items()},
    )
    yield SecuredNats(f"nats://127.0.0.1:{port}", passwords, log)
    server.terminate()
    server.wait(timeout=10)


# -- who gets in -----------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [{}, {"user": "relay", "password": "not-the-password"}], ids=["none", "wrong"])
async def test_without_the_right_password_nobody_gets_in(secured: SecuredNats, credentials: dict[str, str]) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(secured.url, allow_reconnect=False, error_cb=_quiet, **credentials)


async def test_credentials_in_the_url_work_too(secured: SecuredNats) -> None:
    nc = await connect(secured.url.replace("nats://", f"nats://relay:{secured.passwords['relay']}@"))
    try:
        assert (await nc.jetstream().add_stream(name="EVENTS", subjects=["events.>"])).config.name == "EVENTS"
    finally:
        await nc.close()


# -- every service at work -------------------------------------------------------------


async def test_every_service_does_all_its_work_as_its_own_user(secured: SecuredNats, tmp_path: Path) -> None:
    # The seconds policy: a P1's response warning falls due 2 s after opening, so the
    # SLA clock's timer fires through the server (sla.due) within the test.
    common: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'ticketing.sqlite'}", "data_dir": tmp_path,
        "policy_file": POLICIES / "seconds.toml", "contracts_file": POLICIES / "contracts.toml",
        "secret_key": Fernet.generate_key().decode(), "webhook_allowed_hosts": "127.0.0.1", "webhook_timeout": 1.0,
    }
    front = intake(Settings(**common))  # creates the tables, loads the contracts
    relay_settings, notifier_settings, dispatch_settings = (
        secured.settings(user, **common) for user in ("relay", "notifier", "dispatch")
    )
    sla_settings = secured.settings("sla_clock", SlaClockSettings, **common)
    policy, back = load_policy(sla_settings.policy_file), dispatch(dispatch_settings)
    stop, first_relay_stop = asyncio.Event(), asyncio.Event()

    def run(settings: Settings, stopping: asyncio.Event, work: Callable[[Client], Awaitable[None]]) -> asyncio.Task[None]:
        """As `run_worker` runs the relay, the SLA clock and the notifier."""
        return asyncio.create_task(with_nats(settings, stopping, work))

    with _receiver() as received:
        webhook, _ = front.webhooks.subscribe(
            {"url": received.url, "event_types": ["ticket.opened"]}, actor=SUBSCRIBER, correlation_id="c-subscribe"
        )
        first_relay = run(relay_settings, first_relay_stop, lambda nc: relay(relay_settings, nc, first_relay_stop))
        services = [
            first_relay,
            run(sla_settings, stop, lambda nc: keep_time(sla_settings, policy, nc, stop)),
            run(notifier_settings, stop, lambda nc: notify(notifier_settings, nc, stop)),
            asyncio.create_task(consume(back, dispatch_settings, stop)),  # connects by itself
        ]
        try:
            ticket = await asyncio.to_thread(_open_p1, front)
            # relay → EVENTS → notifier fan-out → WEBHOOK_DELIVERIES → lane → receiver
            [first] = await _eventually(lambda: received.bodies)
            assert json.loads(first)["type"] == "ticket.opened"
            # The notifier's redeliveries: one logged message, and a scan of EVENTS since an instant.
            for request in ({"event_id": json.loads(first)["id"], "since": None},
                            {"event_id": None, "since": ticket.received_at - timedelta(seconds=1)}):
                front.webhooks.request_redelivery(webhook.id, actor=SUBSCRIBER, correlation_id="c-again", **request)
            await _eventually(lambda: len(received.bodies) == 3)
            assert set(received.bodies) == {first}
            # sla_clock: armed on ticket.opened, fired by the server, recorded when due.
            await _eventually(lambda: "sla.warning" in _history(front, ticket.id))
            # dispatch: its durable consumer has taken and acknowledged the ticket's events.
            await _eventually(lambda: _dispatch_caught_up(secured))

            # A relay taking over reads its position from the stream's last message; what it
            # relays then ends the ticket's timer, which sla_clock purges.
            first_relay_stop.set()
            await first_relay
            services.append(run(relay_settings, stop, lambda nc: relay(relay_settings, nc, stop)))
            await asyncio.to_thread(_cancel, front, ticket.id)
            await _eventually(lambda: _timer_gone(secured, ticket.id))
            # A deleted subscription's lane goes: its consumer deleted, its queue purged.
            front.webhooks.delete(webhook.id, actor=SUBSCRIBER, correlation_id="c-delete")
            await _eventually(lambda: _no_lanes(secured))
        finally:
            stop.set()
            first_relay_stop.set()
            outcomes = await asyncio.gather(*services, return_exceptions=True)
            back.close()
            front.close()
    assert outcomes == [None] * len(services)  # no service failed
    assert secured.refusals() == []


# -- what no service may do --------------------------------------------------------------


@pytest.mark.parametrize(("user", "subject", "why"), [
    ("notifier", "events.ticket.opened", "only the relay publishes events"),
    ("sla_clock", "events.ticket.opened", "only the relay publishes events"),
    ("dispatch", "events.ticket.opened", "only the relay publishes events"),
    ("relay", "sla.timers.someone", "only the SLA clock arms timers"),
    ("dispatch", "webhooks.someone", "only the notifier queues deliveries"),
    ("notifier", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.dispatch", "another service's consumer"),
    ("notifier", "$JS.API.CONSUMER.DELETE.EVENTS.sla_clock", "another service's consumer"),
    ("dispatch", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.sla_clock", "another service's consumer"),
    ("sla_clock", "$JS.API.STREAM.PURGE.EVENTS", "the audit trail is never purged"),
    ("relay", "$JS.API.STREAM.DELETE.EVENTS", "nor deleted"),
])
async def test_a_service_may_not_publish_what_is_not_its_job(secured: SecuredNats, user: str, subject: str, why: str) -> None:
    nc = await secured.connect(user)
    try:
        await nc.publish(subject, b"{}")
        await nc.flush()
    finally:
        await nc.close()
    # Polled: the server may log a refusal just after answering the flush's ping.
    await _eventually(lambda: secured.refused(user, "Publish", subject), why=why)


async def test_a_refused_event_never_reaches_the_stream(secured: SecuredNats) -> None:
    relay_nc, notifier_nc = await secured.connect("relay"), await secured.connect("notifier")
    try:
        await ensure_event_stream(relay_nc.jetstream(), "EVENTS")
        await notifier_nc.publish("events.ticket.opened", b"{}", headers={"Nats-Msg-Id": "forged"})
        await notifier_nc.flush()
        await _eventually(lambda: secured.refused("notifier", "Publish", "events.ticket.opened"))
        assert (await relay_nc.jetstream().stream_info("EVENTS")).state.messages == 0
    finally:
        await notifier_nc.close()
        await relay_nc.close()


SUBJECTS = ("events.>", "sla.>", "webhooks.>", "$JS.ACK.>")


@pytest.mark.parametrize("user", USERS)
async def test_a_service_hears_only_replies_to_itself(secured: SecuredNats, user: str) -> None:
    """Events, timers and deliveries are read through the service's own consumers, never
    overheard; nor are other services' acks."""
    nc = await secured.connect(user)
    try:
        for subject in SUBJECTS:
            await nc.subscribe(subject)
        await nc.flush()
    finally:
        await nc.close()
    await _eventually(lambda: all(secured.refused(user, "Subscription", s) for s in SUBJECTS))


# -- helpers -----------------------------------------------------------------------------


async def _quiet(error: Exception) -> None:
    """An error callback that leaves the raising to `nats.connect` (no traceback logged)."""


def _open_p1(front: Any) -> Any:
    details = {
        "severity": "P1", "category": "fault", "channel": "monitoring", "customer": "C-汉中电力",
        "contract": "K-TEST-7X24", "site": {"city": "汉中"}, "device": {"model": "S5700"},
        "summary": "核心交换机宕机", "description": "", "contact": {}, "source": {},
    }
    return front.desk.open(details=details, token=None, actor=CLIENT, correlation_id="c-open").ticket


def _cancel(front: Any, ticket_id: UUID) -> None:
    front.desk.act(ticket_id, "cancel", expected_version=None, actor=ENGINEER, correlation_id="c-cancel", reason="误报")


def _history(front: Any, ticket_id: UUID) -> list[str]:
    return [history_entry(event)["type"] for event in front.desk.history(ticket_id)]


async def _timer_gone(secured: SecuredNats, ticket_id: UUID) -> bool:
    nc = await secured.connect("sla_clock")
    try:
        info = await nc.jetstream().stream_info("SLA_TIMERS", subjects_filter=f"sla.*.{ticket_id}")
    finally:
        await nc.close()
    return not info.state.subjects


async def _no_lanes(secured: SecuredNats) -> bool:
    nc = await secured.connect("notifier")
    try:
        return (await nc.jetstream().stream_info("WEBHOOK_DELIVERIES")).state.consumer_count == 0
    finally:
        await nc.close()


async def _dispatch_caught_up(secured: SecuredNats) -> bool:
    """Whether dispatch's consumer of EVENTS has taken messages and has none left to take or ack."""
    nc = await secured.connect("dispatch")
    try:
        info = await nc.jetstream().consumer_info("EVENTS", "dispatch")
    finally:
        await nc.close()
    return info.delivered.consumer_seq > 0 and info.num_pending == 0 and info.num_ack_pending == 0


async def _eventually(check: Callable[[], Any], timeout: float = 10.0, why: str = "") -> Any:
    """Poll `check` (sync or async) until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"not true within {timeout}s {why}")


@dataclass
class _Received:
    url: str = ""
    bodies: list[bytes] = field(default_factory=list)


@contextmanager
def _receiver() -> Iterator[_Received]:
    """A webhook receiver on loopback that answers 204 and keeps what it was sent."""
    received = _Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.bodies.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
