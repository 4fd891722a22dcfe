"""Who goes, and which spare unit: the dispatch rules as pure functions.

Nothing here reads a clock or a store; the caller passes the candidates, the
ticket's needs and the instant, and gets a ranking with the reasons.

Choosing an engineer
--------------------
Hard rules, in this order; the first one an engineer fails is the reason counted
against them when nobody fits ("3 off duty, 1 at capacity"):

1. active;
2. not excluded from the ticket (declined it, handed it back, was complained
   about, or is already on it);
3. covers the site: an office in the site's city, in its region (陕南, 关中,
   陕北), or the head office, which covers every region;
4. at least the level required: the severity's minimum (P1/P2 need a field
   engineer, L2), raised by a complaint (the replacement is at least as senior)
   or by the escalation rung being staffed;
5. on duty at the *service instant*: at work on their hours calendar, or on call
   on their duty day. The service instant is the next working instant of the
   contract's calendar: now for a 7×24 contract (so at 02:00 the on-call engineer
   is the one on duty), the start of the next service day for a 5×8 one (nobody
   is woken for a contract that does not pay for nights; the engineer on duty
   when service resumes is assigned now, so the ticket is never left unassigned);
6. below their capacity (the most tickets they carry at once).

Among those who pass, the order is lexicographic:

0. the contract's dedicated engineer (专人专线) first — they skip rules 3 and 4,
   since the contract itself named them, but never 5 or 6: off duty or full,
   the ticket goes to the rota;
1. region: same city, then same region, then the head office. **Region beats
   skill**: a local engineer without the product skill is preferred to a
   specialist from further away, because the contract measures the time to be on
   site; the specialist joins remotely if the ticket escalates;
2. skill: has the skill the device needs (from the product catalogue);
3. level fit: the lowest level that suffices, keeping seniors free for escalations;
4. least loaded: fewest tickets carried, then the smaller share of capacity, then
   the engineer id (so the choice is deterministic).

Choosing a spare unit: the same model, nearest warehouse first (great-circle
distance between the warehouse's city and the site's city; warehouses in cities
of unknown position come last).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import cache, cached_property
from typing import Any
from zoneinfo import ZoneInfo

from shared.domain.engineer import LEVELS, WEEKDAYS
from shared.sla.calendar import END_OF_DAY, Segment, WorkingCalendar, is_working_instant, next_working_instant

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class City:
    region: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Rung:
    """What one rung of the escalation ladder brings to a ticket."""

    level: str  # engineers of at least this level
    engineers: int  # how many (an expert panel has several)
    role: str  # "support" joins the lead; "lead" takes over (the old lead stays); "panel"


@dataclass(frozen=True)
class DispatchRules:
    """The deployment's dispatch configuration (deploy/engineers.toml, deploy/spare_units.toml)
    with the SLA policy's calendars."""

    head_office: str
    cities: Mapping[str, City]
    min_level: Mapping[str, str]  # severity → the lowest engineer level that may take it
    catalogue: Mapping[str, str]  # model or product prefix (casefolded) → skill
    skills: frozenset[str]
    ladder: Mapping[str, Rung]  # escalation level → rung
    complaint_words: tuple[str, ...]
    unassigned_escalates_to: str
    changeover: time  # duty days run from this local time to the same time the next day
    zone: ZoneInfo
    calendars: Mapping[str, WorkingCalendar]
    service_calendars: Mapping[str, str]  # contract service level → calendar name
    default_calendar: str  # for a ticket without a valid contract
    warehouses: Mapping[str, str]  # warehouse code → city
    spare_severities: frozenset[str]
    loan_seconds: float  # how long a loan may last, in working time on loan_calendar
    loan_calendar: str
    no_stock_escalates_to: str


# -- facts about a ticket --------------------------------------------------------------


def region_of(rules: DispatchRules, place: str | None) -> str | None:
    """The region of a known city, `place` itself when it names a region, else None."""
    if place in rules.cities:
        return rules.cities[place].region
    return place if any(city.region == place for city in rules.cities.values()) else None


def branches_serving(rules: DispatchRules, city: str | None, region: str | None) -> frozenset[str]:
    """The branches that may cover a site (rule 3): its city, its region's cities, the head office."""
    local = {name for name, c in rules.cities.items() if c.region == region}
    return frozenset({rules.head_office, *local, *([city] if city else [])})


def required_skill(rules: DispatchRules, device: Mapping[str, Any]) -> str | None:
    """The skill a device needs: its product when that names a skill, else the longest
    catalogue prefix of its product or model (S5700-28C-EI → S5700 → network)."""
    product = str(device.get("product") or "").casefold()
    if product in rules.skills:
        return product
    for name in (device.get("model"), device.get("product")):
        text = str(name or "").casefold()
        matches = [prefix for prefix in rules.catalogue if prefix and text.startswith(prefix)]
        if matches:
            return rules.catalogue[max(matches, key=len)]
    return None


def service_instant(rules: DispatchRules, service_level: str | None, now: datetime) -> tuple[datetime, str]:
    """When an engineer must be on duty, and the calendar that said so: now within the
    contract's service hours, else when they next begin."""
    calendar = rules.service_calendars.get(service_level or "", rules.default_calendar)
    return next_working_instant(rules.calendars[calendar], now), calendar


def level_at_least(level: str, minimum: str) -> bool:
    return LEVELS.index(level) >= LEVELS.index(minimum)


def highest(*levels: str) -> str:
    return max(levels, key=LEVELS.index)


def is_complaint(rules: DispatchRules, reason: str) -> bool:
    folded = reason.casefold()
    return any(word.casefold() in folded for word in rules.complaint_words)


# -- duty rotas ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rota:
    hours: str  # a calendar of the SLA policy
    on_call: tuple[str, ...]  # duty days, mon..sun


@cache
def on_call_calendar(days: tuple[str, ...], changeover: time, zone: ZoneInfo) -> WorkingCalendar | None:
    """The weekly calendar of a rota's duty days, each from `changeover` to the same time
    the next day (a holiday is covered by that weekday's duty like any other day)."""
    if not days:
        return None
    week: dict[int, list[Segment]] = {}
    for day in days:
        weekday = WEEKDAYS.index(day)
        if changeover == time(0):
            week.setdefault(weekday, []).append(Segment(time(0), END_OF_DAY))
            continue
        week.setdefault(weekday, []).append(Segment(changeover, END_OF_DAY))
        week.setdefault((weekday + 1) % 7, []).append(Segment(time(0), changeover))
    return WorkingCalendar(
        name=f"on-call:{','.join(days)}", zone=zone,
        week={weekday: tuple(sorted(segments, key=lambda s: s.start)) for weekday, segments in week.items()},
        holidays=frozenset(), makeup_workdays=frozenset(), makeup_segments=(), known_years=None,
    )


def duty(rules: DispatchRules, rota: Rota, at: datetime) -> str | None:
    """"at work", "on call (<day> duty)", or None when off duty at `at`."""
    if is_working_instant(rules.calendars[rota.hours], at):
        return "at work"
    calendar = on_call_calendar(rota.on_call, rules.changeover, rules.zone)
    if calendar is None or not is_working_instant(calendar, at):
        return None
    local = at.astimezone(rules.zone)
    duty_day = local.date() - timedelta(days=1) if local.time() < rules.changeover else local.date()
    return f"on call ({WEEKDAYS[duty_day.weekday()]} duty)"


# -- ranking engineers -----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """An engineer as the rules see them (from the engineer list read model)."""

    id: str
    name: str
    branch: str
    level: str
    skills: frozenset[str]
    rota: Rota
    max_tickets: int
    load: int
    active: bool = True


@dataclass(frozen=True)
class Need:
    """What a ticket needs from the engineer being chosen."""

    city: str | None
    region: str | None
    skill: str | None
    min_level: str
    at: datetime  # the service instant
    preferred: str | None = None  # the contract's dedicated engineer
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Match:
    candidate: Candidate
    key: tuple[Any, ...] = field(repr=False)  # best first
    need: Need = field(repr=False)
    tier: int | None = field(repr=False)  # same city, same region, head office (_TIERS), or None
    duty: str = field(repr=False)  # why they are on duty at the service instant, in words

    @cached_property
    def rules(self) -> tuple[str, ...]:
        """The rules that matched, in plain words. Worked out only for the engineers
        booked or listed: a storm ranks every engineer serving the site for each ticket,
        and books one."""
        c, need = self.candidate, self.need
        return (
            *(["dedicated engineer (专人专线)"] if c.id == need.preferred else []),
            *([_TIERS[self.tier].format(branch=c.branch)] if self.tier is not None else []),
            *([f"skill {need.skill}"] if need.skill is not None and need.skill in c.skills else []),
            f"level {c.level} (needs {need.min_level})",
            self.duty,
            f"carries {c.load} of {c.max_tickets}",
        )


@dataclass(frozen=True)
class Ranking:
    matches: tuple[Match, ...]  # best first
    rejected: Mapping[str, int]  # why the others were ruled out: rule → how many, most first
    preferred_rejected: str | None = None  # why the dedicated engineer was ruled out

    def why_nobody(self) -> str:
        if not self.rejected:
            return "no engineers are registered"
        return "no engineer fits: " + ", ".join(f"{count} {rule}" for rule, count in self.rejected.items())


def rank(rules: DispatchRules, candidates: Iterable[Candidate], need: Need) -> Ranking:
    duties: dict[Rota, str | None] = {}  # many engineers share a rota: decide each once

    def on_duty(rota: Rota) -> str | None:
        try:  # one look-up: a Rota's hash and equality are Python code, and this runs per engineer
            return duties[rota]
        except KeyError:
            duties[rota] = found = duty(rules, rota, need.at)
            return found

    matches: list[Match] = []
    rejected: Counter[str] = Counter()
    preferred_rejected = None
    for candidate in candidates:
        outcome = _judge(rules, candidate, need, on_duty)
        if isinstance(outcome, Match):
            matches.append(outcome)
            continue
        rejected[outcome] += 1
        if candidate.id == need.preferred:
            preferred_rejected = outcome
    return Ranking(tuple(sorted(matches, key=lambda m: m.key)), dict(rejected.most_common()), preferred_rejected)


def _judge(rules: DispatchRules, c: Candidate, need: Need, on_duty: Callable[[Rota], str | None]) -> Match | str:
    """The match, or the first hard rule the candidate fails."""
    preferred = c.id == need.preferred
    if not c.active:
        return "inactive"
    if c.id in need.excluded:
        return "excluded from this ticket"
    tier = _tier(rules, c.branch, need)
    if tier is None and not preferred:
        return f"outside {need.city or need.region or 'the region'}"
    if not level_at_least(c.level, need.min_level) and not preferred:
        return f"below {need.min_level}"
    on = on_duty(c.rota)
    if on is None:
        return "off duty"
    if c.load >= c.max_tickets:
        return "at capacity"
    skilled = need.skill is not None and need.skill in c.skills
    key = (not preferred, 9 if tier is None else tier, not skilled, LEVELS.index(c.level), c.load, c.load / c.max_tickets, c.id)
    return Match(c, key, need, tier, on)


_TIERS = ("same city ({branch})", "same region ({branch})", "head office ({branch})")


def _tier(rules: DispatchRules, branch: str, need: Need) -> int | None:
    if need.city is not None and branch == need.city:
        return 0
    if need.region is not None and region_of(rules, branch) == need.region:
        return 1
    if branch == rules.head_office:
        return 2
    return None


# -- spare units -----------------------------------------------------------------------


@dataclass(frozen=True)
class UnitOption:
    code: str
    warehouse: str


def nearest_first(rules: DispatchRules, options: Iterable[UnitOption], site_city: str | None) -> list[tuple[UnitOption, float | None]]:
    """Units with their warehouse's distance to the site in km (None: unknown), nearest first."""
    site = rules.cities.get(site_city or "")

    def km(option: UnitOption) -> float | None:
        home = rules.cities.get(rules.warehouses.get(option.warehouse, ""))
        return None if site is None or home is None else round(distance_km(site, home), 1)

    ranked = [(option, km(option)) for option in options]
    return sorted(ranked, key=lambda pair: (pair[1] is None, pair[1] or 0.0, pair[0].warehouse, pair[0].code))


def distance_km(a: City, b: City) -> float:
    """Great-circle distance: as the crow flies, which orders warehouses well enough."""
    la1, lo1, la2, lo2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))
