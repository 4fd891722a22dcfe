"""The dispatch rules as data: the `[dispatch]` table of deploy/engineers.toml and the
`[stock]` and `[warehouses]` tables of deploy/spare_units.toml, checked at start
against the SLA policy (whose calendars the duty rotas and loans use).

Only reading and checking here; a mistake stops the service at start with the
file and key that are wrong.
"""
from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.dispatching import City, DispatchRules, Rung
from shared.domain.engineer import LEVELS
from shared.domain.ticket import ESCALATION_LEVELS, Severity
from shared.sla.policy import Policy, PolicyError, parse_duration

ROLES = ("support", "lead", "panel")


class DispatchConfigError(ValueError):
    """A dispatch file is wrong; the message names the file and the key."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DispatchConfigError(f"{path}: {error}") from None


def load_rules(engineers_file: Path, spare_units_file: Path, policy: Policy) -> DispatchRules:
    staff = _table(read_toml(engineers_file), "dispatch", engineers_file)
    stock = read_toml(spare_units_file)
    stock_rules = _table(stock, "stock", spare_units_file)
    calendars = policy.calendars
    where = f"{engineers_file}: dispatch"
    cities = {name: _city(f"{where}.cities.{name}", spec) for name, spec in _table(staff, "cities", where).items()}
    skills = frozenset(_list(staff, "skills", where))
    catalogue = {prefix.casefold(): _known(skill, skills, f"{where}.catalogue.{prefix}")
                 for prefix, skill in _table(staff, "catalogue", where).items()}
    min_level = _table(staff, "min_level", where)
    stock_where = f"{spare_units_file}: stock"
    warehouses = {code: _known(city, cities, f"{spare_units_file}: warehouses.{code}")
                  for code, city in _table(stock, "warehouses", str(spare_units_file)).items()}
    try:
        loan_seconds = parse_duration(stock_rules.get("loan_within"), f"{stock_where}.loan_within")
    except PolicyError as error:
        raise DispatchConfigError(str(error)) from None
    return DispatchRules(
        head_office=_known(staff.get("head_office"), cities, f"{where}.head_office"),
        cities=cities,
        min_level={s: _known(min_level.get(s), LEVELS, f"{where}.min_level.{s}") for s in Severity},
        catalogue=catalogue,
        skills=skills,
        ladder={_known(level, ESCALATION_LEVELS, f"{where}.ladder"): _rung(f"{where}.ladder.{level}", spec)
                for level, spec in _table(staff, "ladder", where).items()},
        complaint_words=tuple(_list(staff, "complaint_words", where)),
        unassigned_escalates_to=_known(staff.get("unassigned_escalates_to"), ESCALATION_LEVELS, f"{where}.unassigned_escalates_to"),
        changeover=_time(staff.get("changeover"), f"{where}.changeover"),
        zone=ZoneInfo(staff.get("zone", "Asia/Shanghai")),
        calendars=calendars,
        service_calendars=dict(policy.levels),
        default_calendar=_known(staff.get("default_calendar"), calendars, f"{where}.default_calendar"),
        warehouses=warehouses,
        spare_severities=frozenset(_known(s, list(Severity), f"{stock_where}.severities") for s in _list(stock_rules, "severities", stock_where)),
        loan_seconds=loan_seconds,
        loan_calendar=_known(stock_rules.get("loan_calendar"), calendars, f"{stock_where}.loan_calendar"),
        no_stock_escalates_to=_known(stock_rules.get("no_stock_escalates_to"), ESCALATION_LEVELS, f"{stock_where}.no_stock_escalates_to"),
    )


def _table(data: Mapping[str, Any], key: str, where: object) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise DispatchConfigError(f"{where}: needs a [{key}] table")
    return value


def _list(data: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DispatchConfigError(f"{where}.{key}: expected a list of names")
    return value


def _known(value: Any, allowed: Collection[Any], where: str) -> Any:
    if value not in allowed:
        raise DispatchConfigError(f"{where}: {value!r} is not one of {sorted(map(str, allowed))}")
    return value


def _city(where: str, spec: Any) -> City:
    try:
        return City(region=str(spec["region"]), lat=float(spec["lat"]), lon=float(spec["lon"]))
    except (KeyError, TypeError, ValueError):
        raise DispatchConfigError(f"{where}: expected {{ region = ..., lat = ..., lon = ... }}") from None


def _rung(where: str, spec: Any) -> Rung:
    if not isinstance(spec, dict) or not isinstance(spec.get("engineers"), int) or spec["engineers"] < 1:
        raise DispatchConfigError(f"{where}: expected {{ level = ..., engineers = N, role = ... }} with N >= 1")
    return Rung(level=_known(spec.get("level"), LEVELS, f"{where}.level"), engineers=spec["engineers"],
                role=_known(spec.get("role"), ROLES, f"{where}.role"))


def _time(value: Any, where: str) -> time:
    try:
        return time.fromisoformat(value)
    except (TypeError, ValueError):
        raise DispatchConfigError(f"{where}: {value!r} is not a time like '09:00'") from None
