"""The SLA policy as typed data, loaded from a TOML file (deploy/policy.toml).

Nothing here computes a deadline; this module only reads and checks the file, so a
mistake in it stops the service at start with the key that is wrong.
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

from shared.sla.calendar import Segment, WorkingCalendar, always
from shared.sla.cn_holidays import cn_business_calendar

SEVERITIES = ("P1", "P2", "P3", "P4")
TARGETS = ("response", "on_site", "resolution")
CALLBACK = "callback"
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_WHEN_KEYS = {"category", "severity", "zone", "tier", "billable", "received_between"}


class PolicyError(ValueError):
    """The policy file is wrong; the message names the key."""


@dataclass(frozen=True)
class Rule:
    name: str
    when: Mapping[str, Any]
    raise_priority: int = 0
    target: str | None = None
    seconds: float | None = None
    calendar: str | None = None
    replaces_table: bool = False


@dataclass(frozen=True)
class Policy:
    version: str
    calendars: Mapping[str, WorkingCalendar]
    levels: Mapping[str, str]
    targets: Mapping[str, Mapping[str, float]]
    on_site_by_default: frozenset[str]
    callback_seconds: float
    callback_calendar: str
    rules: tuple[Rule, ...]
    warning_ratio: float
    severity_change: str
    rule_precedence: str
    escalation_levels: Mapping[str, str]
    escalation_on_breach: Mapping[str, str]
    holiday_overrides: Mapping[str, str]  # calendar → its holiday override file, as the policy names it

    def level_calendar(self, level: str) -> str:
        if level not in self.levels:
            raise PolicyError(f"unknown service level {level!r}; the policy knows {sorted(self.levels)}")
        return self.levels[level]


def parse_duration(text: str, where: str = "duration") -> float:
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise PolicyError(f"{where}: {text!r} is not a duration like '30m', '2h', '1h30m' or '90s'")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def load_policy(path: Path) -> Policy:
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: {error}") from None
    # The version names the file's exact content, so two different files never share one.
    version = f"{_required(data, 'version', str)}+{hashlib.sha256(raw).hexdigest()[:12]}"
    calendars = {name: _calendar(path.parent, name, spec) for name, spec in _required(data, "calendars", dict).items()}
    levels = _required(data, "levels", dict)
    for level, calendar in levels.items():
        _known(calendar, calendars, f"levels.{level}")
    table = _required(data, "targets", dict)
    targets = {severity: _severity_targets(severity, _required(table, severity, dict)) for severity in SEVERITIES}
    callback = _required(data, "callback", dict)
    policy = Policy(
        version=version,
        calendars=calendars,
        levels=levels,
        targets=targets,
        on_site_by_default=frozenset(_known(s, SEVERITIES, "on_site_by_default") for s in data.get("on_site_by_default", [])),
        callback_seconds=parse_duration(_required(callback, "within", str), "callback.within"),
        callback_calendar=_known(callback.get("calendar", "always"), calendars, "callback.calendar"),
        rules=tuple(_rule(i, spec, calendars) for i, spec in enumerate(data.get("rules", []))),
        warning_ratio=_ratio(data.get("warning_ratio", 0.75)),
        severity_change=_known(data.get("severity_change", "retroactive"), ("retroactive", "from_change"), "severity_change"),
        rule_precedence=_known(data.get("rule_precedence", "earliest"), ("earliest", "first"), "rule_precedence"),
        escalation_levels=_required(data.get("escalation", {}), "levels", dict),
        escalation_on_breach=data.get("escalation", {}).get("on_breach", {}),
        holiday_overrides={name: spec["holiday_override"] for name, spec in data["calendars"].items()
                           if "holiday_override" in spec},
    )
    for target, level in policy.escalation_on_breach.items():
        _known(target, (*TARGETS, CALLBACK), "escalation.on_breach")
        _known(level, policy.escalation_levels, f"escalation.on_breach.{target}")
    return policy


def _severity_targets(severity: str, spec: dict[str, Any]) -> dict[str, float]:
    for target in ("response", "resolution"):
        if target not in spec:
            raise PolicyError(f"targets.{severity} needs a {target} time")
    return {_known(t, TARGETS, f"targets.{severity}"): parse_duration(v, f"targets.{severity}.{t}") for t, v in spec.items()}


def _calendar(base: Path, name: str, spec: dict[str, Any]) -> WorkingCalendar:
    kind = spec.get("kind")
    zone = spec.get("zone", "Asia/Shanghai")
    if kind == "always":
        return always(name, zone)
    if kind == "cn-business":
        segments = tuple(Segment(time.fromisoformat(a), time.fromisoformat(b)) for a, b in spec.get("segments", []))
        override = base / spec["holiday_override"] if "holiday_override" in spec else None
        if override is not None and not override.is_file():
            raise PolicyError(f"calendars.{name}.holiday_override: no file {override}")
        kwargs = {"segments": segments} if segments else {}
        return cn_business_calendar(override, name=name, zone=zone, **kwargs)
    raise PolicyError(f"calendars.{name}.kind must be 'cn-business' or 'always', not {kind!r}")


def _rule(index: int, spec: dict[str, Any], calendars: Mapping[str, WorkingCalendar]) -> Rule:
    where = f"rules[{index}]"
    name = _required(spec, "name", str)
    when = _required(spec, "when", dict)
    for key in when:
        _known(key, _WHEN_KEYS, f"{where}.when")
    target = spec.get("target")
    if target is not None:
        _known(target, TARGETS, f"{where}.target")
    sets_target = target is not None
    if sets_target != ("within" in spec) or not (sets_target or spec.get("raise_priority")):
        raise PolicyError(f"{where} ({name}) needs either target + within, or raise_priority")
    return Rule(
        name=name,
        when={k: tuple(v) if isinstance(v, list) else v for k, v in when.items()},
        raise_priority=int(spec.get("raise_priority", 0)),
        target=target,
        seconds=parse_duration(spec["within"], f"{where}.within") if target else None,
        calendar=_known(spec["calendar"], calendars, f"{where}.calendar") if "calendar" in spec else None,
        replaces_table=bool(spec.get("replaces_table", False)),
    )


def _required(data: dict[str, Any], key: str, kind: type) -> Any:
    if not isinstance(data.get(key), kind):
        raise PolicyError(f"policy needs {key!r} ({kind.__name__})")
    return data[key]


def _known(value: Any, allowed: Any, where: str) -> Any:
    if value not in allowed:
        raise PolicyError(f"{where}: {value!r} is not one of {sorted(allowed)}")
    return value


def _ratio(value: Any) -> float:
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise PolicyError(f"warning_ratio must be between 0 and 1, not {value!r}")
    return float(value)
