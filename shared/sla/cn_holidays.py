"""The Chinese business calendar: statutory holidays and make-up working days (调休).

Each November the State Council publishes next year's schedule: which days are off
and which weekend days are worked to make up for them. The `holidays` package
carries these schedules for the years it was released for; it also computes the
statutory days for later years, but without the make-up swaps that is a guess, so
only the years with official data are taken from it. Ops add newer years, and
corrections, in a TOML override file (deploy/calendars/cn-holidays-override.toml).
"""
from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from holidays.countries.china import China

from shared.sla.calendar import Segment, WorkingCalendar

CN_OFFICE_HOURS = (Segment(time(9), time(12)), Segment(time(13), time(18)))
_MONDAY_TO_FRIDAY = range(5)
_SATURDAY = 5
_OVERRIDE_KEYS = ("holidays", "makeup_workdays", "remove_holidays", "remove_makeup_workdays")


def official_years() -> frozenset[int]:
    """Years for which the installed `holidays` package has the State Council's schedule.

    Those are the years its China class lists substituted days for (4- or 5-item
    entries in `special_public_holidays`); every published schedule has some.
    """
    special = China().special_public_holidays
    return frozenset(year for year, entries in special.items() if any(len(entry) >= 4 for entry in _entries(entries)))


def cn_business_calendar(
    override_file: Path | None = None,
    *,
    name: str = "cn-business",
    zone: str = "Asia/Shanghai",
    segments: tuple[Segment, ...] = CN_OFFICE_HOURS,
    years: Iterable[int] = range(2020, 2031),
) -> WorkingCalendar:
    """Monday to Friday `segments`, statutory holidays off, make-up weekend days worked.

    Package data is loaded for the requested `years` that have official data; the
    override file then adds or removes days and declares its years known.
    """
    package_years = official_years() & frozenset(years)
    schedule = China(years=sorted(package_years))
    days_off = {day for day in schedule if day.year in package_years}
    # weekend_workdays also holds cross-year swaps of every year the package knows.
    makeup_days = {day for day in schedule.weekend_workdays if day.year in package_years}
    known = set(package_years)
    if override_file is not None:
        for year, override in _read_override(override_file).items():
            known.add(year)
            days_off = (days_off - override.remove_holidays) | override.holidays
            makeup_days = (makeup_days - override.remove_makeup_workdays) | override.makeup_workdays
    return WorkingCalendar(
        name=name,
        zone=ZoneInfo(zone),
        week={weekday: segments for weekday in _MONDAY_TO_FRIDAY},
        holidays=frozenset(days_off),
        makeup_workdays=frozenset(makeup_days),
        makeup_segments=segments,
        known_years=frozenset(known),
    )


@dataclass(frozen=True)
class _YearOverride:
    holidays: frozenset[date]
    makeup_workdays: frozenset[date]
    remove_holidays: frozenset[date]
    remove_makeup_workdays: frozenset[date]


def _read_override(path: Path) -> dict[int, _YearOverride]:
    """Parse the override file; any mistake raises ValueError naming the file."""
    with path.open("rb") as file:
        try:
            document = tomllib.load(file)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from error
    if extra := set(document) - {"years"}:
        raise ValueError(f"{path}: unknown top-level keys {sorted(extra)}; only [years.YYYY] tables are allowed")
    return dict(_parse_year(path, key, table) for key, table in document.get("years", {}).items())


def _parse_year(path: Path, key: str, table: Any) -> tuple[int, _YearOverride]:
    where = f"{path}: [years.{key}]"
    if not (key.isdigit() and len(key) == 4) or not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table named by a four-digit year")
    year = int(key)
    if extra := set(table) - set(_OVERRIDE_KEYS):
        raise ValueError(f"{where}: unknown keys {sorted(extra)}; allowed: {list(_OVERRIDE_KEYS)}")
    fields = {name: _dates(where, name, year, table.get(name, [])) for name in _OVERRIDE_KEYS}
    if weekdays := sorted(day for day in fields["makeup_workdays"] if day.weekday() < _SATURDAY):
        raise ValueError(f"{where}: make-up working days must be weekend days, not {weekdays}")
    for added, removed in (("holidays", "remove_holidays"), ("makeup_workdays", "remove_makeup_workdays")):
        if both := fields[added] & fields[removed]:
            raise ValueError(f"{where}: {sorted(both)} both in {added} and {removed}")
    return year, _YearOverride(**fields)


def _dates(where: str, name: str, year: int, value: Any) -> frozenset[date]:
    # `type(...) is date` because TOML datetimes are date subclasses and would slip through.
    if not isinstance(value, list) or any(type(item) is not date for item in value):
        raise ValueError(f"{where}: {name} must be a list of TOML dates like 2027-01-01 (no quotes, no time)")
    # A date outside its table's year is almost always a typo for the wrong year.
    if stray := sorted(item for item in value if item.year != year):
        raise ValueError(f"{where}: {name} has dates outside {year}: {stray}")
    return frozenset(value)


def _entries(value: tuple[Any, ...]) -> tuple[tuple[Any, ...], ...]:
    """The package stores a year's entries as one tuple, or as a tuple of them."""
    return value if value and isinstance(value[0], tuple) else (value,)
