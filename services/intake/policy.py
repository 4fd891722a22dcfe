"""The policy API: the SLA policy in force, as data, for admins and auditors.

The policy is not changed over the API. Ops replace the file (TICKETING_POLICY_FILE)
and restart, so each process computes deadlines with one policy for its whole life,
and each recorded deadline names that policy's version. This route shows which one
is in force.

No `from __future__ import annotations`, as in contracts.py: FastAPI reads the route
annotations of functions defined inside `policy_router`.
"""
from dataclasses import asdict
from datetime import time
from typing import Any

from fastapi import APIRouter

from services.intake.access import Gate
from shared.sla.calendar import END_OF_DAY, WorkingCalendar
from shared.sla.policy import Policy

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def policy_router(policy: Policy, gate: Gate) -> APIRouter:
    router = APIRouter(tags=["sla"])
    document = policy_document(policy)  # built once: the policy never changes while the process runs

    @router.get("/v1/policy")
    def read_policy(ctx: gate.context("policy:read")) -> dict[str, Any]:  # type: ignore[valid-type]
        """The SLA policy in force: its version (as recorded on every deadline), calendars,
        service levels, the severity table, rules, warning ratio and escalation ladder.
        Durations are working seconds on the target's calendar."""
        return document

    return router


def policy_document(policy: Policy) -> dict[str, Any]:
    return {
        "version": policy.version,
        "calendars": {name: _calendar(calendar, policy.holiday_overrides.get(name))
                      for name, calendar in policy.calendars.items()},
        "levels": dict(policy.levels),
        "targets": {severity: dict(targets) for severity, targets in policy.targets.items()},
        "on_site_by_default": sorted(policy.on_site_by_default),
        "callback": {"seconds": policy.callback_seconds, "calendar": policy.callback_calendar},
        "rules": [asdict(rule) for rule in policy.rules],
        "rule_precedence": policy.rule_precedence,
        "severity_change": policy.severity_change,
        "warning_ratio": policy.warning_ratio,
        "escalation": {"levels": dict(policy.escalation_levels), "on_breach": dict(policy.escalation_on_breach)},
    }


def _calendar(calendar: WorkingCalendar, override: str | None) -> dict[str, Any]:
    week = {WEEKDAYS[day]: [[_wall(s.start), "24:00" if s.end == END_OF_DAY else _wall(s.end)] for s in segments]
            for day, segments in sorted(calendar.week.items()) if segments}
    # A calendar without official years (7×24) takes no holidays at all.
    holidays = None if calendar.known_years is None else {
        "source": "holidays package", "override": override, "known_years": sorted(calendar.known_years),
    }
    return {"zone": calendar.zone.key, "week": week, "holidays": holidays}


def _wall(moment: time) -> str:
    return moment.isoformat(timespec="seconds" if moment.second else "minutes")
