"""Which committed times a ticket gets: the severity table, adjusted by the policy's
rules. Pure: same policy and facts, same plan."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, time
from typing import Any

from shared.sla.calendar import add_working_time, unknown_years
from shared.sla.policy import CALLBACK, SEVERITIES, TARGETS, Policy, Rule


@dataclass(frozen=True)
class Facts:
    """What the rules may look at."""

    severity: str
    category: str
    level: str
    tier: str = "normal"
    zone: str | None = None
    billable: bool = False


@dataclass(frozen=True)
class Planned:
    target: str
    seconds: float
    calendar: str
    rule: str  # "table", "callback", or the winning rule's name


@dataclass(frozen=True)
class Plan:
    policy_version: str
    level: str
    severity: str  # effective: after any priority raise
    raised_by: tuple[str, ...]
    on_site_by_default: bool
    targets: tuple[Planned, ...]
    unverified_years: tuple[int, ...]  # deadlines reaching years without an official holiday schedule

    def target(self, name: str) -> Planned | None:
        return next((t for t in self.targets if t.target == name), None)

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Plan:
        return cls(**{
            **data,
            "raised_by": tuple(data["raised_by"]),
            "targets": tuple(Planned(**t) for t in data["targets"]),
            "unverified_years": tuple(data["unverified_years"]),
        })


def plan_targets(policy: Policy, facts: Facts, start: datetime) -> Plan:
    level_calendar = policy.level_calendar(facts.level)
    raisers = [r for r in policy.rules if r.raise_priority and _matches(policy, r, facts, facts.severity, start)]
    severity = SEVERITIES[max(0, SEVERITIES.index(facts.severity) - sum(r.raise_priority for r in raisers))]
    planned = [
        chosen
        for target in TARGETS
        if (chosen := _choose(policy, target, facts, severity, level_calendar, start)) is not None
    ]
    planned.append(Planned(CALLBACK, policy.callback_seconds, policy.callback_calendar, CALLBACK))
    gaps = sorted({
        year
        for p in planned if p.target != CALLBACK
        for year in unknown_years(policy.calendars[p.calendar], start, due_from(policy, p, start))
    })
    return Plan(
        policy_version=policy.version,
        level=facts.level,
        severity=severity,
        raised_by=tuple(r.name for r in raisers),
        on_site_by_default=severity in policy.on_site_by_default,
        targets=tuple(planned),
        unverified_years=tuple(gaps),
    )


def due_from(policy: Policy, planned: Planned, start: datetime) -> datetime:
    return add_working_time(policy.calendars[planned.calendar], start, planned.seconds)


def _choose(policy: Policy, target: str, facts: Facts, severity: str, level_calendar: str, start: datetime) -> Planned | None:
    rules = [r for r in policy.rules if r.target == target and _matches(policy, r, facts, severity, start)]
    candidates = [
        Planned(target, r.seconds or 0.0, r.calendar or level_calendar, r.name) for r in rules
    ]
    if target in policy.targets[severity] and not any(r.replaces_table for r in rules):
        table = Planned(target, policy.targets[severity][target], level_calendar, "table")
        candidates = [table, *candidates] if policy.rule_precedence == "earliest" else [*candidates, table]
    if not candidates:
        return None
    if policy.rule_precedence == "first":
        return candidates[0]
    return min(candidates, key=lambda p: due_from(policy, p, start))  # min keeps the first of equals


def _matches(policy: Policy, rule: Rule, facts: Facts, severity: str, received: datetime) -> bool:
    values = {"category": facts.category, "severity": severity, "zone": facts.zone, "tier": facts.tier, "billable": facts.billable}
    for key, wanted in rule.when.items():
        if key == "received_between":
            zone = policy.calendars[rule.calendar or policy.level_calendar(facts.level)].zone
            local = received.astimezone(zone).time()
            if not time.fromisoformat(wanted[0]) <= local < time.fromisoformat(wanted[1]):
                return False
        elif values[key] not in (wanted if isinstance(wanted, tuple) else (wanted,)):
            return False
    return True
