"""The Webhook aggregate and the rules a subscription obeys: event-type patterns,
filters, URLs, and which addresses webhooks may reach (the SSRF rule)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from uuid import uuid4

import pytest

from shared.domain.errors import InvalidWebhook, WebhookStateConflict
from shared.domain.webhook import (
    Destinations,
    Facts,
    Filters,
    Spec,
    Status,
    Webhook,
    normalize_event_types,
    parse_address,
    type_matches,
)
from shared.event_format import event_type, is_internal

AT = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
WHO = {"actor": {"kind": "agent", "id": "ops"}, "correlation_id": "c-1"}
SPEC = Spec.of({"url": "https://hooks.example.com/in", "event_types": ["ticket.escalated"]})


def subscribed(spec: Spec = SPEC) -> Webhook:
    return Webhook.subscribe(uuid4(), spec, sealed_secret="sealed-1", at=AT, **WHO)


# -- event types ------------------------------------------------------------------------


def test_patterns_are_normalized_without_overlap() -> None:
    assert normalize_event_types(["sla.breached", "sla.*", "ticket.escalated", "ticket.escalated"]) == (
        "sla.*", "ticket.escalated")
    assert normalize_event_types(["sla.*", "*"]) == ("*",)


@pytest.mark.parametrize("patterns", [[], ["Ticket.Escalated"], ["sla"], ["sla.*.x"], ["*.breached"], [7]])
def test_bad_patterns_are_refused(patterns: list) -> None:
    with pytest.raises(InvalidWebhook) as refused:
        normalize_event_types(patterns)
    assert refused.value.field == "event_types"


def test_type_matching() -> None:
    assert type_matches(("sla.*",), "sla.breached") and type_matches(("*",), "contract.registered")
    assert type_matches(("ticket.escalated",), "ticket.escalated")
    assert not type_matches(("sla.*",), "ticket.escalated") and not type_matches(("ticket.escalated",), "ticket.opened")


# -- filters ------------------------------------------------------------------------------


def test_filters_admit_only_matching_streams() -> None:
    p1_in_shaanxi = Filters.of({"severities": ["P1"], "regions": ["陕南"]})
    assert p1_in_shaanxi.admits(Facts(customer="C-1", severity="P1", region="陕南"))
    assert not p1_in_shaanxi.admits(Facts(customer="C-1", severity="P2", region="陕南"))
    assert not Filters.of({"customers": ["C-1"]}).admits(Facts())  # no customer passes no customer filter
    assert Filters().admits(Facts())


@pytest.mark.parametrize(("values", "field"), [
    ({"severities": ["P9"]}, "filters.severities"),
    ({"colours": ["red"]}, "filters.colours"),
    ({"customers": "C-1"}, "filters.customers"),
    ({"regions": [""]}, "filters.regions"),
])
def test_bad_filters_are_refused(values: dict, field: str) -> None:
    with pytest.raises(InvalidWebhook) as refused:
        Filters.of(values)
    assert refused.value.field == field


def test_facts_of_a_ticket_prefer_the_site_region_over_the_contract_region() -> None:
    ticket = SimpleNamespace(customer="C-1", severity="P2", site={"region": "陕南"}, entitlement={"region": "关中"})
    assert Facts.of(ticket) == Facts("C-1", "P2", "陕南")
    ticket.site = {}
    assert Facts.of(ticket).region == "关中"
    assert Facts.of(SimpleNamespace(customer="C-2", region="陕北")) == Facts("C-2", None, "陕北")


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "ftp://hooks.example.com/", "https://user:pass@hooks.example.com/", "https:///path", "https://h:99999/",
    "hooks.example.com/in", "", "https://" + "a" * 2000 + ".com/",
])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhook) as refused:
        Spec.of({"url": url, "event_types": ["*"]})
    assert refused.value.field == "url"


def test_a_spec_amended_keeps_what_was_not_given() -> None:
    amended = SPEC.amended({"description": "on-call", "filters": {"severities": ["P1"]}})
    assert (amended.url, amended.event_types, amended.description) == (SPEC.url, SPEC.event_types, "on-call")
    assert amended.filters.severities == ("P1",)


# -- destinations ---------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "kind"), [
    ("10.0.0.1", "private"), ("192.168.1.1", "private"), ("172.16.0.1", "private"),
    ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("100.100.100.200", "non-public"),
    ("0.0.0.0", "private"), ("224.0.0.1", "multicast"), ("::1", "loopback"), ("fe80::1", "link-local"),
    ("fd00:ec2::254", "private"), ("::ffff:10.0.0.1", "private"), ("64:ff9b::a00:1", "private"),
    ("2002:a00:1::", "private"),
])
def test_inward_addresses_are_refused(address: str, kind: str) -> None:
    refusal = Destinations().refusal("hooks.example.com", [parse_address(address)])
    assert refusal and refusal.startswith("hooks.example.com resolves to ") and refusal.endswith(f"a {kind} address")


def test_public_addresses_pass_and_one_inward_address_refuses_the_host() -> None:
    rule = Destinations()
    assert rule.refusal("hooks.example.com", [parse_address("93.184.215.14"), parse_address("2606:4700::1")]) is None
    assert rule.refusal("hooks.example.com", [parse_address("93.184.215.14"), parse_address("10.0.0.1")])
    assert rule.refusal("nowhere.example.com", []) == "nowhere.example.com does not resolve to any address"
    assert rule.refusal("10.0.0.1", [parse_address("10.0.0.1")]) == "10.0.0.1 is a private address"


def test_the_allow_list_takes_hosts_addresses_and_networks() -> None:
    rule = Destinations(["127.0.0.1", "10.9.0.0/16", "Tickets.Internal"])
    assert rule.refusal("127.0.0.1", [parse_address("127.0.0.1")]) is None
    assert rule.refusal("localhost", [parse_address("::ffff:127.0.0.1")]) is None
    assert rule.refusal("crm", [parse_address("10.9.3.4")]) is None
    assert rule.refusal("tickets.internal.", [parse_address("192.168.5.5")]) is None
    assert rule.refusal("crm", [parse_address("10.8.0.1")])


# -- the aggregate ---------------------------------------------------------------------------


def test_a_subscription_starts_active_with_one_sealed_key() -> None:
    webhook = subscribed()
    assert (webhook.status, webhook.spec, [k.sealed for k in webhook.keys]) == (Status.ACTIVE, SPEC, ["sealed-1"])
    [created] = webhook.collect_events()
    assert is_internal(created) and "sealed-1" == created.secret


def test_commands_that_change_nothing_record_nothing() -> None:
    webhook = subscribed()
    assert not webhook.change(SPEC, at=AT, **WHO)
    assert webhook.change(SPEC.amended({"description": "x"}), at=AT, **WHO)
    assert webhook.pause(at=AT, **WHO) and not webhook.pause(at=AT, **WHO)
    assert webhook.resume(at=AT, **WHO) and not webhook.resume(at=AT, **WHO)
    changed = webhook.collect_events()[1]
    assert changed.changes == {"description": "x"}  # only what differs
    assert webhook.version == 4


def test_disabling_is_recorded_once_as_a_public_event() -> None:
    webhook = subscribed(SPEC.amended({"description": "old CRM"}))
    assert webhook.disable(reason="gone", detail="attempt 1: HTTP 410", event_id="e-1", at=AT, **WHO)
    assert not webhook.disable(reason="gone", detail="again", event_id="e-2", at=AT, **WHO)
    assert (webhook.status, webhook.disabled_reason) == (Status.DISABLED, "gone: attempt 1: HTTP 410")
    disabled = webhook.collect_events()[-1]
    assert not is_internal(disabled) and event_type(disabled) == "webhook.disabled"
    assert (disabled.reason, disabled.event_id, disabled.description) == ("gone", "e-1", "old CRM")
    with pytest.raises(WebhookStateConflict):
        webhook.pause(at=AT, **WHO)
    assert webhook.resume(at=AT, **WHO) and webhook.status == Status.ACTIVE and webhook.disabled_reason is None


def test_rotation_overlaps_keys_and_a_zero_overlap_ends_them_all() -> None:
    webhook = subscribed()
    webhook.rotate_secret("sealed-2", overlap=timedelta(hours=1), at=AT, **WHO)
    assert [k.sealed for k in webhook.signing_keys(AT + timedelta(minutes=59))] == ["sealed-1", "sealed-2"]
    assert [k.sealed for k in webhook.signing_keys(AT + timedelta(hours=1))] == ["sealed-2"]
    webhook.rotate_secret("sealed-3", overlap=timedelta(0), at=AT + timedelta(minutes=5), **WHO)
    assert [k.sealed for k in webhook.signing_keys(AT + timedelta(minutes=5))] == ["sealed-3"]


def test_redelivery_requests_wait_until_done() -> None:
    webhook = subscribed()
    with pytest.raises(InvalidWebhook):
        webhook.request_redelivery("r-0", event_id=None, since=None, at=AT, **WHO)
    webhook.request_redelivery("r-1", event_id=None, since=AT, at=AT, **WHO)
    assert webhook.redeliveries["r-1"]["since"] == AT.isoformat()
    assert webhook.complete_redelivery("r-1", enqueued=3, at=AT, **WHO)
    assert not webhook.complete_redelivery("r-1", enqueued=3, at=AT, **WHO)
    assert webhook.redeliveries == {}


def test_replaying_the_events_gives_the_same_subscription() -> None:
    webhook = subscribed()
    webhook.change(SPEC.amended({"event_types": ["sla.*"]}), at=AT, **WHO)
    webhook.rotate_secret("sealed-2", overlap=timedelta(hours=1), at=AT, **WHO)
    webhook.pause(at=AT, **WHO)
    replayed = None
    for event in webhook.collect_events():
        replayed = event.mutate(replayed)
    assert vars(replayed) == vars(webhook)
