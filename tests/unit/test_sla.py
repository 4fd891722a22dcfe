"""SLA targets and clocks on the Ticket, with the shipped policy and injected instants:
no sleeping, a 48-hour target checked in microseconds."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest

from shared.domain.ticket import Severity, Ticket
from shared.settings import ROOT
from shared.sla.clocks import ClockState, due_alerts, pending_alerts, view
from shared.sla.policy import PolicyError, load_policy
from shared.sla.targets import Facts, due_from, plan_targets

POLICY = load_policy(ROOT / "deploy" / "policy.toml")
SH = ZoneInfo("Asia/Shanghai")
WHO = {"actor": {"kind": "engineer", "id": "E-1"}, "correlation_id": "c"}


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


def ticket(received: datetime, severity: str = "P1", level: str = "premium", category: str = "fault",
           policy=POLICY, **facts: object) -> Ticket:
    t = Ticket.open(
        id=uuid4(), at=received, number="T-2026-000001", severity=severity, category=category, channel="hotline",
        customer="C-1", contract="K-1", site={"city": "汉中"}, device={}, summary="s", description="", contact={},
        source={}, request_digest="d", **WHO,
    )
    plan = plan_targets(policy, Facts(severity=severity, category=category, level=level, **facts), received)
    t.commit_sla(plan=plan, entitlement={}, start=received, restart=False, reason="opened", at=received, **WHO)
    return t


def due(t: Ticket, target: str, now: datetime, policy=POLICY) -> datetime | None:
    return view(t.sla.clocks[target], policy, now).due_at


def test_standard_p2_received_friday_evening_is_due_monday_morning() -> None:
    t = ticket(sh(2026, 11, 20, 17, 30), "P2", "standard")
    assert due(t, "response", sh(2026, 11, 20, 17, 30)) == sh(2026, 11, 23, 9, 30)


def test_nothing_falls_due_during_the_national_day_holiday() -> None:
    t = ticket(sh(2026, 9, 30, 17, 0), "P2", "standard")
    assert due(t, "response", sh(2026, 9, 30, 17)) == sh(2026, 10, 8, 9, 0)  # 1 h used up at 18:00, then the holiday
    owed_by_end_of_holiday = due_alerts(t.sla, POLICY, sh(2026, 10, 7, 23, 59))
    assert [(a.kind, a.due_at) for a in owed_by_end_of_holiday] == [("warning", sh(2026, 9, 30, 17, 45))]


def test_a_deadline_can_fall_on_a_make_up_working_saturday() -> None:
    t = ticket(sh(2026, 10, 9, 17, 0), "P4", "standard")
    assert due(t, "response", sh(2026, 10, 9, 17)) == sh(2026, 10, 10, 17, 0)  # 调休: Saturday 10 October is worked


def test_warnings_fall_in_working_time_not_over_the_weekend() -> None:
    t = ticket(sh(2026, 11, 20, 16, 0), "P3", "standard")  # response 4 h, warning at 3 h
    warning = view(t.sla.clocks["response"], POLICY, sh(2026, 11, 20, 16)).warning_at
    assert warning == sh(2026, 11, 23, 10, 0)
    assert [a.kind for a in due_alerts(t.sla, POLICY, sh(2026, 11, 22, 23, 0))] == []


def test_always_calendar_counts_nights_and_weekends() -> None:
    t = ticket(sh(2026, 11, 21, 2, 0), "P1", "premium")  # Saturday 02:00
    assert due(t, "resolution", sh(2026, 11, 21, 2)) == sh(2026, 11, 23, 2, 0)
    assert due(t, "on_site", sh(2026, 11, 21, 2)) == sh(2026, 11, 21, 4, 0)


def test_warning_then_breach_then_escalation_target_are_each_due_once() -> None:
    t0 = sh(2026, 11, 21, 2, 0)
    t = ticket(t0, "P1", "premium")
    alerts = due_alerts(t.sla, POLICY, t0 + timedelta(minutes=23))
    assert [(a.kind, a.target, a.due_at) for a in alerts] == [("warning", "response", t0 + timedelta(minutes=22, seconds=30))]
    assert t.record_sla_alert(kind="warning", target="response", cycle=1, due_at=alerts[0].due_at, at=t0 + timedelta(minutes=23), **WHO)
    assert not t.record_sla_alert(kind="warning", target="response", cycle=1, due_at=alerts[0].due_at, at=t0 + timedelta(minutes=23), **WHO)
    assert due_alerts(t.sla, POLICY, t0 + timedelta(minutes=29)) == []
    breach = due_alerts(t.sla, POLICY, t0 + timedelta(minutes=30))
    assert [(a.kind, a.target) for a in breach] == [("breach", "response")]
    assert t.record_sla_alert(kind="breach", target="response", cycle=1, due_at=breach[0].due_at, at=t0 + timedelta(minutes=30), **WHO)
    assert view(t.sla.clocks["response"], POLICY, t0 + timedelta(hours=1)).state is ClockState.BREACHED
    assert POLICY.escalation_on_breach["response"] == "L2"


def test_acknowledgement_meets_the_response_target() -> None:
    t0 = sh(2026, 11, 21, 2, 0)
    t = ticket(t0, "P1", "premium")
    t.acknowledge(plan="p", at=t0 + timedelta(minutes=12), **WHO)
    response = view(t.sla.clocks["response"], POLICY, t0 + timedelta(hours=5))
    assert (response.state, response.met_at, response.due_at) == (ClockState.MET, t0 + timedelta(minutes=12), t0 + timedelta(minutes=30))
    assert response.elapsed_seconds == 12 * 60 and response.remaining_seconds == 18 * 60
    assert all(a.target != "response" for a in pending_alerts(t.sla, POLICY))


def test_waiting_for_the_customer_pauses_every_running_clock() -> None:
    t0 = sh(2026, 11, 21, 2, 0)
    t = ticket(t0, "P1", "premium")
    t.acknowledge(plan="p", at=t0 + timedelta(minutes=5), **WHO)
    t.await_customer(reason="machine room locked", at=t0 + timedelta(minutes=10), **WHO)
    paused = view(t.sla.clocks["resolution"], POLICY, t0 + timedelta(days=5))
    assert (paused.state, paused.due_at, paused.elapsed_seconds) == (ClockState.PAUSED, None, 600)
    assert due_alerts(t.sla, POLICY, t0 + timedelta(days=5)) == []  # nothing fires while paused
    t.record_customer_response(message="open now", at=t0 + timedelta(minutes=70), **WHO)
    assert due(t, "resolution", t0 + timedelta(hours=2)) == t0 + timedelta(hours=49)
    assert due(t, "on_site", t0 + timedelta(hours=2)) == t0 + timedelta(hours=3)


def test_a_pause_over_a_weekend_counts_no_working_time_twice() -> None:
    t = ticket(sh(2026, 11, 20, 9, 0), "P3", "standard")  # Friday; resolution 40 working hours
    t.acknowledge(plan="p", at=sh(2026, 11, 20, 10, 0), **WHO)
    t.await_customer(reason="logs", at=sh(2026, 11, 20, 17, 0), **WHO)
    t.record_customer_response(message="sent", at=sh(2026, 11, 23, 10, 0), **WHO)  # Monday 10:00
    # 7 h used on Friday; Monday 09:00–10:00 was paused; 33 h left from Monday 10:00.
    assert due(t, "resolution", sh(2026, 11, 23, 10)) == sh(2026, 11, 27, 11, 0)


@pytest.mark.parametrize(("mode", "breaches_at_once"), [("retroactive", True), ("from_change", False)])
def test_severity_change_recomputes_targets(mode: str, breaches_at_once: bool) -> None:
    policy = dataclasses.replace(POLICY, severity_change=mode)
    received = sh(2026, 11, 23, 9, 0)  # Monday
    t = ticket(received, "P3", "standard", policy=policy)
    changed = received + timedelta(hours=1)
    t.change_severity(severity=Severity.P1, reason="whole plant down", at=changed, **WHO)
    start = received if mode == "retroactive" else changed
    plan = plan_targets(policy, Facts("P1", "fault", "standard"), start)
    t.commit_sla(plan=plan, entitlement={}, start=start, restart=mode == "from_change", reason="severity", at=changed, **WHO)
    assert t.sla.clocks["response"].seconds == 30 * 60
    alerts = [(a.kind, a.target) for a in due_alerts(t.sla, policy, changed)]
    assert (("breach", "response") in alerts) is breaches_at_once
    expected = received + timedelta(minutes=30) if breaches_at_once else changed + timedelta(minutes=30)
    assert due(t, "response", changed, policy) == expected
    assert t.sla.clocks["on_site"].started_at == start  # P1 is owed a visit from then on


def test_severity_change_does_not_unmeet_a_met_target() -> None:
    received = sh(2026, 11, 23, 9, 0)
    t = ticket(received, "P3", "standard")
    t.acknowledge(plan="p", at=received + timedelta(hours=1), **WHO)
    plan = plan_targets(POLICY, Facts("P1", "fault", "standard"), received)
    t.commit_sla(plan=plan, entitlement={}, start=received, restart=False, reason="severity", at=received + timedelta(hours=2), **WHO)
    assert all(a.target != "response" for a in due_alerts(t.sla, POLICY, received + timedelta(hours=2)))


def test_reopen_starts_a_new_resolution_cycle_that_does_not_breach_at_once() -> None:
    t0 = sh(2026, 11, 21, 2, 0)
    t = ticket(t0, "P1", "premium")
    t.acknowledge(plan="p", at=t0 + timedelta(minutes=5), **WHO)
    t.resolve(resolution="r", cause="", at=t0 + timedelta(hours=47), **WHO)
    reopened = t0 + timedelta(hours=60)  # long after the first resolution target
    t.reopen(reason="fault is back", at=reopened, **WHO)
    assert due_alerts(t.sla, POLICY, reopened) == []
    clock = t.sla.clocks["resolution"]
    assert clock.cycle == 2 and due(t, "resolution", reopened) == reopened + timedelta(hours=48)
    assert view(t.sla.clocks["callback"], POLICY, reopened).state is ClockState.STOPPED


def test_callback_is_due_a_day_after_resolution_and_met_by_confirmation() -> None:
    t0 = sh(2026, 11, 20, 10, 0)
    t = ticket(t0, "P2", "standard")
    t.acknowledge(plan="p", at=t0 + timedelta(minutes=5), **WHO)
    resolved = t0 + timedelta(hours=3)
    t.resolve(resolution="r", cause="", at=resolved, **WHO)
    assert due(t, "callback", resolved) == resolved + timedelta(hours=24)  # 7×24, whatever the level
    t.confirm(satisfaction=5, comment="", at=resolved + timedelta(hours=2), **WHO)
    assert view(t.sla.clocks["callback"], POLICY, resolved + timedelta(days=2)).state is ClockState.MET


def test_a_visit_request_starts_the_on_site_clock_for_lower_severities() -> None:
    t0 = sh(2026, 11, 21, 2, 0)
    t = ticket(t0, "P3", "premium")
    assert view(t.sla.clocks["on_site"], POLICY, t0).state is ClockState.NOT_APPLICABLE
    requested = t0 + timedelta(hours=1)
    t.request_visit(reason="needs hands on the device", at=requested, **WHO)
    assert due(t, "on_site", requested) == requested + timedelta(hours=12)


def test_cancel_stops_the_clocks() -> None:
    t0 = sh(2026, 11, 21, 2, 0)
    t = ticket(t0, "P1", "premium")
    t.cancel(reason="duplicate", at=t0 + timedelta(minutes=10), **WHO)
    assert pending_alerts(t.sla, POLICY) == []
    assert view(t.sla.clocks["resolution"], POLICY, t0 + timedelta(days=9)).state is ClockState.STOPPED


def test_vip_raises_the_priority_and_the_plan_names_the_rule() -> None:
    plan = plan_targets(POLICY, Facts("P3", "fault", "standard", tier="vip"), sh(2026, 11, 23, 9))
    assert (plan.severity, plan.raised_by) == ("P2", ("vip-priority",))
    assert plan.target("response").seconds == 3600 and plan.on_site_by_default


def test_rules_compete_with_the_table_and_name_the_winner() -> None:
    start = sh(2026, 11, 23, 9)
    change = plan_targets(POLICY, Facts("P3", "change_request", "premium"), start).target("response")
    assert (change.rule, change.seconds, change.calendar) == ("change-request-answer", 16 * 3600, "cn-business")
    paid = plan_targets(POLICY, Facts("P3", "fault", "standard", zone="suburban", billable=True), start).target("on_site")
    assert (paid.rule, paid.seconds) == ("paid-on-site-out-of-town", 24 * 3600)
    # 09:00–16:00 major fault: the 4 h rule (7×24) loses to the table's 2 h under "earliest", wins under "first".
    daytime = sh(2026, 11, 23, 10)
    assert plan_targets(POLICY, Facts("P1", "fault", "standard"), daytime).target("on_site").rule == "table"
    first = dataclasses.replace(POLICY, rule_precedence="first")
    assert plan_targets(first, Facts("P1", "fault", "standard"), daytime).target("on_site").rule == "major-fault-daytime-on-site"
    night = sh(2026, 11, 23, 17)
    assert plan_targets(first, Facts("P1", "fault", "standard"), night).target("on_site").rule == "table"


def test_deadlines_in_years_without_official_holidays_are_flagged() -> None:
    plan = plan_targets(POLICY, Facts("P4", "fault", "standard"), sh(2026, 12, 28, 9))
    assert plan.unverified_years == (2027,)
    assert due_from(POLICY, plan.target("resolution"), sh(2026, 12, 28, 9)).year == 2027
    assert plan_targets(POLICY, Facts("P1", "fault", "premium"), sh(2026, 12, 28, 9)).unverified_years == ()


def test_recorded_plan_names_policy_version_and_calendar() -> None:
    t = ticket(sh(2026, 11, 20, 17, 30), "P2", "standard")
    committed = t.collect_events()[-1]
    assert committed.plan["policy_version"] == POLICY.version
    assert {(x["target"], x["calendar"]) for x in committed.plan["targets"]} >= {("response", "cn-business")}
    assert view(t.sla.clocks["response"], POLICY, sh(2026, 11, 20, 17, 30)).policy_version == POLICY.version


def test_policy_mistakes_name_the_key(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "policy.toml").read_text()
    (tmp_path / "policy.toml").write_text(text)
    with pytest.raises(PolicyError, match="calendars.cn-business.holiday_override"):
        load_policy(tmp_path / "policy.toml")  # the override file is not beside this copy
    override = str(ROOT / "deploy" / "calendars" / "cn-holidays-override.toml")
    text = text.replace('"calendars/cn-holidays-override.toml"', f'"{override}"')
    (tmp_path / "policy.toml").write_text(text.replace('response = "30m"', 'response = "soon"'))
    with pytest.raises(PolicyError, match="targets.P1.response"):
        load_policy(tmp_path / "policy.toml")
    assert load_policy(ROOT / "deploy" / "policy.toml").version.startswith("2026.11+")
