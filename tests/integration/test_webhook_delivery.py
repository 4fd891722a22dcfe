"""Webhook delivery as a subscriber sees it: real receivers on loopback, a real
nats-server, the relay and the notifier running, signatures checked with the
`standardwebhooks` package.

Retries run on a sub-second schedule (settings), so nothing here waits for minutes;
every wait polls against a deadline.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook as StandardWebhook

from services.notifier.streams import FANOUT_CONSUMER
from services.notifier.worker import Notifier
from services.relay.worker import Relay
from shared.bootstrap import Intake, intake
from shared.bus import connect, ensure_event_stream
from shared.projections.webhook_deliveries import Attempt, Delivery, DeliveryLog, DeliveryStatus, Outcome, Planned, delivery_id
from shared.read_db import read_engine
from shared.settings import ROOT, Settings
from shared.store import EventStore, open_store
from shared.webhooks import Webhooks
from tests.keys import bearer
from tests.webhook_receiver import Received, Receiver, serving

pytestmark = pytest.mark.nats

TIMEOUT_SECONDS = 1.0  # a receiver's time to answer, in these tests
SCHEDULE = (0.2, 0.4, 1.5)  # seconds before retry 1, 2, 3


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving() as state:
        yield state


# -- the product, in process (intake API, relay, notifier) ------------------------------


def webhook_settings(database_url: str, nats_url: str, data_dir: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "nats_url": nats_url, "data_dir": data_dir,
        "contracts_file": ROOT / "deploy" / "contracts.toml", "secret_key": Fernet.generate_key().decode(),
        "webhook_allowed_hosts": "127.0.0.1", "webhook_retry_schedule": SCHEDULE, "webhook_retry_jitter": 0.0,
        "webhook_timeout": TIMEOUT_SECONDS, "webhook_concurrency": 2,
        "rate_limit": 0,  # the measurement opens tickets as fast as it can
    }
    return Settings(**(values | changes))


@dataclass
class System:
    settings: Settings
    api: httpx.AsyncClient
    webhooks: Webhooks
    nats_url: str


@asynccontextmanager
async def running(
    settings: Settings, *, notifier: bool = True, notifier_settings: Settings | None = None
) -> AsyncIterator[System]:
    """The intake API (in process, over ASGI), the relay and, unless told not to, the
    notifier: on `notifier_settings` if given, as after ops changed its settings."""
    service: Intake = intake(settings)
    webhooks = service.webhooks
    # The relay and the notifier as separate processes would have them: their own store and engine.
    store, engine = open_store(settings.resolved_database_url()), read_engine(settings.resolved_database_url())
    nc = await connect(settings.nats_url or "")
    await ensure_event_stream(nc.jetstream(), settings.stream_name)
    stop = asyncio.Event()
    workers = [asyncio.create_task(Relay(store, nc, settings.stream_name).run(stop))]
    if notifier:
        workers.append(asyncio.create_task(Notifier(notifier_settings or settings, store, engine, nc).run(stop)))
    try:
        admin = bearer(service.gate.keyring, "admin")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://intake",
                                     headers=admin) as api:
            yield System(settings, api, webhooks, settings.nats_url or "")
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await nc.close()
        store.close()
        engine.dispose()
        service.close()


@pytest.fixture
async def system(database_url: str, nats_url: str, tmp_path: Path) -> AsyncIterator[System]:
    async with running(webhook_settings(database_url, nats_url, tmp_path)) as started:
        yield started


async def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `check` (sync or async) until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout}s: {getattr(check, '__name__', check)}")
        await asyncio.sleep(interval)


async def subscribe(api: httpx.AsyncClient, url: str, *types: str, **more: Any) -> dict:
    created = await api.post("/v1/webhooks", json={"url": url, "event_types": list(types)} | more)
    assert created.status_code == 201, created.text
    return created.json()


INCIDENT = {"severity": "P2", "customer": "陕西秦川数据科技有限公司", "contract": "K-XA-2025-002",
            "summary": "数据库无法连接", "site": {"city": "西安", "region": "关中"}}


async def escalate(api: httpx.AsyncClient, **changes: Any) -> dict:
    """Open a ticket and escalate it; returns the recorded ticket.escalated history entry."""
    ticket = (await api.post("/v1/tickets", json=INCIDENT | changes)).json()
    escalated = await api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L2", "reason": "客户投诉"})
    assert escalated.status_code == 200, escalated.text
    history = (await api.get(f"/v1/tickets/{ticket['id']}/events")).json()
    return history[-1]


async def deliveries(api: httpx.AsyncClient, webhook: dict) -> list[dict]:
    return (await api.get(f"/v1/webhooks/{webhook['id']}/deliveries", params={"limit": 500})).json()["deliveries"]


async def fanned_out(system: System) -> bool:
    """Every event on the stream has been through the fan-out."""
    nc = await connect(system.nats_url)
    try:
        js = nc.jetstream()
        stream = await js.stream_info(system.settings.stream_name)
        consumer = await js.consumer_info(system.settings.stream_name, FANOUT_CONSUMER)
    finally:
        await nc.close()
    return consumer.delivered.stream_seq == stream.state.last_seq and consumer.num_ack_pending == 0


def verified(webhook: dict, request: Received) -> dict:
    return StandardWebhook(webhook["secret"]).verify(request.body, request.headers)


# -- the tests ---------------------------------------------------------------------------


async def test_an_escalation_is_delivered_once_signed_with_the_event_as_body(
    system: System, receiver: Receiver
) -> None:
    webhook = await subscribe(system.api, receiver.url("/escalations"), "ticket.escalated")
    entry = await escalate(system.api)

    [request] = await eventually(lambda: receiver.at("/escalations"))
    body = verified(webhook, request)
    assert (body["id"], body["type"], body["specversion"]) == (entry["id"], "ticket.escalated", "1.0")
    assert body["data"] == entry["data"] and body["data"]["level"] == "L2"
    assert request.headers["webhook-id"] == entry["id"]
    assert request.headers["content-type"].startswith("application/cloudevents+json")

    await eventually(lambda: fanned_out(system))
    [delivery] = await eventually(lambda: deliveries(system.api, webhook))
    assert (delivery["event_id"], delivery["status"]) == (entry["id"], "delivered")
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 200)]
    assert len(receiver.at("/escalations")) == 1


async def test_failures_are_retried_on_the_schedule_under_the_same_webhook_id(
    system: System, receiver: Receiver
) -> None:
    receiver.script("/flaky", 500, 500, 200)
    webhook = await subscribe(system.api, receiver.url("/flaky"), "ticket.escalated")
    entry = await escalate(system.api)

    requests = await eventually(lambda: len(receiver.at("/flaky")) == 3 and receiver.at("/flaky"))
    assert {r.headers["webhook-id"] for r in requests} == {entry["id"]}
    assert all(verified(webhook, r)["id"] == entry["id"] for r in requests)
    gaps = [later.at - earlier.at for earlier, later in zip(requests, requests[1:])]
    assert gaps[0] >= SCHEDULE[0] * 0.9 and gaps[1] >= SCHEDULE[1] * 0.9
    [delivery] = await eventually(
        lambda: _settled(deliveries(system.api, webhook)))
    assert delivery["status"] == "delivered"
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 500), (2, 500), (3, 200)]
    assert [a["retry_at"] is not None for a in delivery["attempts"]] == [True, True, False]
    assert all(a["latency_ms"] > 0 for a in delivery["attempts"])


async def _settled(listing: Any) -> list[dict]:
    found = await listing
    return found if found and all(d["status"] != "pending" for d in found) else []


async def test_retry_after_is_honoured(system: System, receiver: Receiver) -> None:
    receiver.script("/busy", (503, {"Retry-After": "1"}))
    await subscribe(system.api, receiver.url("/busy"), "ticket.escalated")
    await escalate(system.api)

    first, second = await eventually(lambda: len(receiver.at("/busy")) == 2 and receiver.at("/busy"))
    assert second.at - first.at >= 0.9  # not the schedule's 0.2 s


async def test_410_disables_the_subscription_and_records_why(system: System, receiver: Receiver) -> None:
    ops = await subscribe(system.api, receiver.url("/ops"), "webhook.disabled")
    receiver.script("/gone", 410)
    webhook = await subscribe(system.api, receiver.url("/gone"), "ticket.escalated", description="old CRM")
    entry = await escalate(system.api)

    disabled = await eventually(lambda: _with_status(system.api, webhook, "disabled"))
    assert disabled["disabled_reason"] == "gone: attempt 1: HTTP 410"
    [delivery] = await deliveries(system.api, webhook)
    assert (delivery["status"], len(delivery["attempts"])) == ("failed", 1)
    # The fact is an event of its own, delivered like any other to whoever wants it.
    [notice] = await eventually(lambda: receiver.at("/ops"))
    body = verified(ops, notice)
    assert (body["type"], body["subject"]) == ("webhook.disabled", webhook["id"])
    assert body["data"] | {"reason": "gone", "event_id": entry["id"], "description": "old CRM"} == body["data"]

    await escalate(system.api)  # a disabled subscription takes nothing new
    await eventually(lambda: fanned_out(system))
    assert len(receiver.at("/gone")) == 1


async def _with_status(api: httpx.AsyncClient, webhook: dict, status: str) -> dict | None:
    current = (await api.get(f"/v1/webhooks/{webhook['id']}")).json()
    return current if current["status"] == status else None


async def test_an_exhausted_schedule_fails_the_delivery_and_disables(system: System, receiver: Receiver) -> None:
    receiver.script("/down", then=500)
    webhook = await subscribe(system.api, receiver.url("/down"), "ticket.escalated")
    await escalate(system.api)

    disabled = await eventually(lambda: _with_status(system.api, webhook, "disabled"))
    assert disabled["disabled_reason"] == f"retries_exhausted: attempt {len(SCHEDULE) + 1}: HTTP 500"
    [delivery] = await deliveries(system.api, webhook)
    assert delivery["status"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [500] * (len(SCHEDULE) + 1)


async def test_a_hanging_receiver_times_out_and_retries_without_delaying_others(
    system: System, receiver: Receiver
) -> None:
    receiver.hanging.add("/hang")
    stuck = await subscribe(system.api, receiver.url("/hang"), "ticket.escalated")
    await subscribe(system.api, receiver.url("/fine"), "ticket.escalated")
    recorded = {}
    for _ in range(5):  # more than the hanging lane's concurrency
        recorded[(await escalate(system.api))["id"]] = time.monotonic()

    fine = await eventually(lambda: len(receiver.at("/fine")) == 5 and receiver.at("/fine"))
    # None waited for the hanging receiver: each arrived sooner than that one's timeout.
    assert all(r.at - recorded[r.headers["webhook-id"]] < TIMEOUT_SECONDS for r in fine)
    retried = await eventually(lambda: _retried(system.api, stuck))
    assert retried["attempts"][0]["error"] == f"no answer within {TIMEOUT_SECONDS:g}s"
    assert retried["attempts"][0]["status_code"] is None


async def _retried(api: httpx.AsyncClient, webhook: dict) -> dict | None:
    return next((d for d in await deliveries(api, webhook) if len(d["attempts"]) >= 2), None)


async def test_filters_pick_tickets_by_severity_and_customer(system: System, receiver: Receiver) -> None:
    p1 = await subscribe(system.api, receiver.url("/p1"), "ticket.escalated", filters={"severities": ["P1"]})
    await subscribe(system.api, receiver.url("/other"), "ticket.escalated", filters={"customers": ["别的客户"]})
    await escalate(system.api, severity="P2")
    wanted = await escalate(system.api, severity="P1")

    [request] = await eventually(lambda: receiver.at("/p1"))
    assert verified(p1, request)["id"] == wanted["id"]
    await eventually(lambda: fanned_out(system))
    assert receiver.at("/other") == [] and len(receiver.at("/p1")) == 1


async def test_a_region_filter_takes_only_that_regions_tickets(system: System, receiver: Receiver) -> None:
    webhook = await subscribe(system.api, receiver.url("/south"), "ticket.escalated", filters={"regions": ["陕南"]})
    await escalate(system.api)  # 关中, the site's region
    by_site = await escalate(system.api, site={"city": "汉中", "region": "陕南"})
    # No region on the site: the contract's (安康's water utility, 陕南) decides.
    by_contract = await escalate(system.api, customer="安康市水务集团", contract="K-AK-2026-003", site={"city": "安康"})

    requests = await eventually(lambda: len(receiver.at("/south")) == 2 and receiver.at("/south"))
    assert {verified(webhook, r)["id"] for r in requests} == {by_site["id"], by_contract["id"]}
    await eventually(lambda: fanned_out(system))
    assert len(receiver.at("/south")) == 2


async def test_an_integration_key_s_webhook_gets_none_of_another_customer_s_events(
    system: System, receiver: Receiver
) -> None:
    customer = "C-汉中电力"  # K-2026-017's; INCIDENT is another customer's
    issued = await system.api.post("/v1/keys", json={"name": "portal", "role": "integration", "customers": [customer]})
    own_key = {"Authorization": f"Bearer {issued.json()['key']}"}
    created = await system.api.post("/v1/webhooks", json={"url": receiver.url("/own"), "event_types": ["*"]},
                                    headers=own_key)
    assert created.status_code == 201 and created.json()["filters"]["customers"] == [customer]
    everything = await subscribe(system.api, receiver.url("/all"), "*")  # the admin's: every customer
    other = await escalate(system.api)
    mine = (await system.api.post("/v1/tickets", json=INCIDENT | {"customer": customer, "contract": "K-2026-017"},
                                  headers=own_key)).json()

    # The other customer's escalation was sent (to the admin's), and A's own ticket to A's.
    await eventually(lambda: other["id"] in {verified(everything, r)["id"] for r in receiver.at("/all")})
    await eventually(lambda: mine["id"] in {verified(created.json(), r)["subject"] for r in receiver.at("/own")})
    await eventually(lambda: fanned_out(system))
    logged = await eventually(lambda: _settled(deliveries(system.api, created.json())))
    assert {d["event_id"] for d in logged} == {r.headers["webhook-id"] for r in receiver.at("/own")}  # none on its way
    assert {verified(created.json(), r)["subject"] for r in receiver.at("/own")} == {mine["id"]}


async def test_a_family_pattern_takes_every_type_in_it(system: System, receiver: Receiver) -> None:
    webhook = await subscribe(system.api, receiver.url("/sla"), "sla.*")
    ticket = (await system.api.post("/v1/tickets", json=INCIDENT)).json()  # a contract: sla.committed

    [request] = await eventually(lambda: receiver.at("/sla"))
    body = verified(webhook, request)
    assert (body["type"], body["subject"]) == ("sla.committed", ticket["id"])


async def test_during_a_rotation_both_secrets_sign(system: System, receiver: Receiver) -> None:
    old = await subscribe(system.api, receiver.url("/rotating"), "ticket.escalated")
    new = (await system.api.post(f"/v1/webhooks/{old['id']}/rotate-secret", json={"overlap_seconds": 3600})).json()
    await escalate(system.api)

    [request] = await eventually(lambda: receiver.at("/rotating"))
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verified(old, request) == verified(new, request)

    newest = (await system.api.post(f"/v1/webhooks/{old['id']}/rotate-secret", json={"overlap_seconds": 0})).json()
    await escalate(system.api)
    _, later = await eventually(lambda: len(receiver.at("/rotating")) == 2 and receiver.at("/rotating"))
    assert verified(newest, later)
    with pytest.raises(Exception, match="No matching signature"):
        verified(old, later)


async def test_a_paused_subscription_queues_and_delivers_on_resume(system: System, receiver: Receiver) -> None:
    webhook = await subscribe(system.api, receiver.url("/paused"), "ticket.escalated")
    await system.api.post(f"/v1/webhooks/{webhook['id']}/pause")
    entry = await escalate(system.api)
    await eventually(lambda: fanned_out(system))
    [queued] = await eventually(lambda: deliveries(system.api, webhook))
    assert (queued["status"], queued["attempts"]) == ("pending", [])

    await system.api.post(f"/v1/webhooks/{webhook['id']}/resume")
    [request] = await eventually(lambda: receiver.at("/paused"))
    assert request.headers["webhook-id"] == entry["id"]


async def test_deleting_a_subscription_cancels_its_pending_deliveries(
    database_url: str, nats_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    step = 0.3
    async with running(webhook_settings(database_url, nats_url, tmp_path, webhook_retry_schedule=(step,) * 40)) as system:
        receiver.script("/doomed", then=500)
        webhook = await subscribe(system.api, receiver.url("/doomed"), "ticket.escalated")
        wanted = {(await escalate(system.api))["id"] for _ in range(2)}
        await eventually(lambda: all(_tries(receiver, "/doomed", event) >= 2 for event in wanted))  # both retrying

        assert (await system.api.delete(f"/v1/webhooks/{webhook['id']}")).status_code == 204
        cancelled = await eventually(lambda: _all_cancelled(system, webhook))
        assert {delivery.event_id for delivery, _ in cancelled} == wanted
        assert all(d.next_attempt_at is None and d.finished_at is not None and len(tried) >= 2 for d, tried in cancelled)
        assert all(a.status_code == 500 for _, tried in cancelled for a in tried)
        sent = len(receiver.at("/doomed"))
        await asyncio.sleep(10 * step)  # ten retries' worth
        assert len(receiver.at("/doomed")) == sent


def _tries(receiver: Receiver, path: str, event_id: str) -> int:
    return sum(1 for r in receiver.at(path) if r.headers["webhook-id"] == event_id)


def _all_cancelled(system: System, webhook: dict) -> list[tuple[Delivery, list[Attempt]]]:
    # From the log itself: the API no longer shows a deleted subscription's deliveries.
    logged, _ = system.webhooks.deliveries.page(UUID(webhook["id"]), None, 500, 0)
    return logged if logged and all(d.status == DeliveryStatus.CANCELLED for d, _ in logged) else []


def test_an_attempt_out_during_the_deletion_leaves_its_delivery_cancelled(store: EventStore, database_url: str) -> None:
    """The order the race above can take: the lanes cancel, then an attempt already out
    records its outcome. It is logged, and the delivery stays cancelled. (`store` makes
    the database schema, as every service's start does.)"""
    engine = read_engine(database_url)
    log, subscription, now = DeliveryLog(engine), uuid4(), datetime.now(timezone.utc)
    planned = Planned(delivery_id("event-1", subscription), subscription, "event-1", "ticket.escalated", now, 1)
    log.enqueue([planned], now)
    log.cancel_pending(subscription, now)
    log.record([Outcome(planned.id, Attempt(1, now, 500, 3.0, None, now), DeliveryStatus.PENDING)])
    [(delivery, attempts)], _ = log.page(subscription, None, 10, 0)
    engine.dispose()
    assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.CANCELLED, None)
    assert [a.status_code for a in attempts] == [500]


async def test_a_host_refused_at_connect_time_is_never_sent(
    database_url: str, nats_url: str, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The subscription's host passed the check when subscribing (allow-listed by name then);
    by delivery the allow-list no longer names it, and the connection step, resolving it
    to loopback, refuses: the receiver sees nothing, each attempt is logged with why, and
    the exhausted schedule disables the subscription."""
    caplog.set_level(logging.INFO, logger="services.notifier.courier")
    subscribing = webhook_settings(database_url, nats_url, tmp_path, webhook_allowed_hosts="localhost")
    delivering = subscribing.model_copy(update={"webhook_allowed_hosts": ()})
    async with running(subscribing, notifier_settings=delivering) as system:
        url = receiver.url("/rebound").replace("//127.0.0.1:", "//localhost:")
        webhook = await subscribe(system.api, url, "ticket.escalated")
        await escalate(system.api)

        disabled = await eventually(lambda: _with_status(system.api, webhook, "disabled"))
        [delivery] = await deliveries(system.api, webhook)
    assert receiver.requests == []
    attempts = len(SCHEDULE) + 1
    refusal = delivery["attempts"][0]["error"]
    assert re.fullmatch(r"destination refused: localhost resolves to (127\.0\.0\.1|::1), which is a loopback address", refusal)
    assert delivery["status"] == "failed"
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [(None, refusal)] * attempts
    assert disabled["disabled_reason"] == f"retries_exhausted: attempt {attempts}: {refusal}"
    logged = [r.getMessage() for r in caplog.records if r.name == "services.notifier.courier"]
    assert all(any(m.endswith(f": attempt {n} {refusal}") for m in logged) for n in range(1, attempts + 1))


async def test_redeliver_one_message_and_everything_since(system: System, receiver: Receiver) -> None:
    webhook = await subscribe(system.api, receiver.url("/again"), "ticket.escalated")
    first = await escalate(system.api)
    await eventually(lambda: receiver.at("/again"))

    again = await system.api.post(f"/v1/webhooks/{webhook['id']}/redeliver", json={"event_id": first["id"]})
    assert again.status_code == 202
    await eventually(lambda: len(receiver.at("/again")) == 2)
    assert {r.headers["webhook-id"] for r in receiver.at("/again")} == {first["id"]}

    # Gone for a while: disabled, and what happened meanwhile was never queued...
    receiver.script("/again", 410)
    second = await escalate(system.api)
    await eventually(lambda: _with_status(system.api, webhook, "disabled"))
    third = await escalate(system.api)
    await eventually(lambda: fanned_out(system))
    # ...until the receiver is back: resume, and ask for everything since the outage began.
    await system.api.post(f"/v1/webhooks/{webhook['id']}/resume")
    since = datetime.fromisoformat(second["recorded_at"]).astimezone(timezone.utc).isoformat()
    await system.api.post(f"/v1/webhooks/{webhook['id']}/redeliver", json={"since": since})
    await eventually(lambda: {second["id"], third["id"]} <= {r.headers["webhook-id"] for r in _answered(receiver, "/again")})
    log = await deliveries(system.api, webhook)
    assert sum(1 for d in log if d["redelivery_request"]) == 3  # one message, then two since


def _answered(receiver: Receiver, path: str) -> list[Received]:
    return [r for r in receiver.at(path) if r.status is not None and 200 <= r.status < 300]


def start_notifier(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`python -m services.notifier`, as ops start it, configured through the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETING_")} | {
        "TICKETING_DATABASE_URL": settings.resolved_database_url(), "TICKETING_NATS_URL": settings.nats_url or "",
        "TICKETING_DATA_DIR": str(settings.data_dir),
        "TICKETING_SECRET_KEY": settings.secret_key.get_secret_value() if settings.secret_key else "",
        "TICKETING_WEBHOOK_ALLOWED_HOSTS": ",".join(settings.webhook_allowed_hosts),
        "TICKETING_WEBHOOK_RETRY_SCHEDULE": ",".join(f"{s}s" for s in settings.webhook_retry_schedule),
        "TICKETING_WEBHOOK_RETRY_JITTER": str(settings.webhook_retry_jitter),
        "TICKETING_WEBHOOK_TIMEOUT": str(settings.webhook_timeout),
    }
    with log.open("ab") as output:
        return subprocess.Popen([sys.executable, "-m", "services.notifier"], cwd=ROOT, env=env,
                                stdout=output, stderr=subprocess.STDOUT)


async def test_a_notifier_killed_with_deliveries_pending_delivers_them_all_after_restart(
    database_url: str, nats_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    settings = webhook_settings(database_url, nats_url, tmp_path, webhook_retry_schedule=(0.5,) * 40)
    log = tmp_path / "notifier.log"
    async with running(settings, notifier=False) as system:
        receiver.script("/kill", then=503)  # down: every delivery stays pending
        webhook = await subscribe(system.api, receiver.url("/kill"), "ticket.escalated")
        worker = start_notifier(settings, log)
        try:
            entries = [await escalate(system.api) for _ in range(10)]
            await eventually(lambda: len({r.headers["webhook-id"] for r in receiver.at("/kill")}) >= 5, timeout=30)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            pending = await deliveries(system.api, webhook)
            assert pending and all(d["status"] == "pending" for d in pending)

            receiver.script("/kill", then=200)  # back up
            worker = start_notifier(settings, log)
            wanted = {e["id"] for e in entries}
            await eventually(lambda: wanted <= {r.headers["webhook-id"] for r in _answered(receiver, "/kill")},
                             timeout=60)
            settled = await eventually(lambda: _settled(deliveries(system.api, webhook)))
            assert {d["event_id"] for d in settled} == wanted and len(settled) == len(wanted)
            assert all(d["status"] == "delivered" and d["attempts"][-1]["status_code"] == 200 for d in settled)
        finally:
            worker.terminate()
            assert worker.wait(timeout=30) == 0, log.read_text()


@dataclass(frozen=True)
class Figures:
    deliveries: int
    drain_seconds: float  # a backlog, from the first delivery to the last
    latency_p50: float  # seconds from an event's recording to its arrival, under light load
    latency_p99: float

    @property
    def per_second(self) -> float:
        return self.deliveries / self.drain_seconds


async def measure(settings: Settings, receiver: Receiver, log: Path, *, events: int, subscriptions: int) -> Figures:
    """Deliveries per second draining a backlog (the notifier started after `events`
    tickets were opened, each wanted by `subscriptions` receivers), then latency with
    tickets opened one at a time while it runs."""
    async with running(settings, notifier=False) as system:
        for number in range(subscriptions):
            await subscribe(system.api, receiver.url(f"/bench/{number}"), "ticket.opened")
        for _ in range(events):
            await system.api.post("/v1/tickets", json=INCIDENT)
        worker = start_notifier(settings, log)
        try:
            backlog = events * subscriptions
            await eventually(lambda: len(receiver.requests) >= backlog, timeout=300)
            arrivals = sorted(r.at for r in receiver.requests)
            drain = arrivals[-1] - arrivals[0]
            live = []
            for _ in range(100):
                opened = (await system.api.post("/v1/tickets", json=INCIDENT)).json()
                live.append(opened["id"])
                await asyncio.sleep(0.02)  # a steady trickle, not a burst
            await eventually(lambda: len(receiver.requests) >= backlog + len(live) * subscriptions, timeout=60)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    latencies = sorted(
        r.wall - datetime.fromisoformat(json.loads(r.body)["time"]).timestamp()
        for r in receiver.requests if json.loads(r.body)["subject"] in live
    )
    return Figures(backlog, drain, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)])


async def test_throughput_and_latency(database_url: str, nats_url: str, tmp_path: Path, receiver: Receiver) -> None:
    settings = webhook_settings(database_url, nats_url, tmp_path)
    figures = await measure(settings, receiver, tmp_path / "notifier.log", events=300, subscriptions=3)
    print(f"\n{database_url.split(':')[0]}: {figures.deliveries} deliveries drained at {figures.per_second:.0f}/s; "
          f"event to delivery p50 {figures.latency_p50 * 1000:.0f} ms, p99 {figures.latency_p99 * 1000:.0f} ms")
    # Floors far below what a laptop does, so only a real regression trips them.
    assert figures.per_second > 50 and figures.latency_p99 < 2.0
