"""The dispatch rules on the demo roster (deploy/engineers.toml): who gets a ticket, by
the documented order (shared/dispatching.py), across business hours, lunch, nights,
weekends, holidays and make-up working days; and which spare unit is nearest."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from shared.dispatch_config import load_rules, read_toml
from shared.dispatching import (
    Candidate, Need, Rota, UnitOption, branches_serving, duty, nearest_first, rank, region_of, required_skill,
    service_instant,
)
from shared.domain.engineer import Profile
from shared.settings import ROOT
from shared.sla.policy import load_policy

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEPLOY = ROOT / "deploy"
RULES = load_rules(DEPLOY / "engineers.toml", DEPLOY / "spare_units.toml", load_policy(DEPLOY / "policy.toml"))


def roster(loads: dict[str, int] | None = None) -> list[Candidate]:
    """The demo engineers as the rules see them, carrying `loads` tickets."""
    candidates = []
    for code, values in read_toml(DEPLOY / "engineers.toml")["engineers"].items():
        p = Profile.of(values)
        candidates.append(Candidate(code, p.name, p.branch, p.level, frozenset(p.skills), Rota(p.hours, p.on_call),
                                    p.max_tickets, (loads or {}).get(code, 0), p.active))
    return candidates


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def choose(city: str, severity: str, level: str | None, when: str, *, model: str = "S5700-28C-EI",
           preferred: str | None = None, excluded: tuple[str, ...] = (), loads: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    at, _ = service_instant(RULES, level, local(when))
    region = region_of(RULES, city)
    need = Need(city=city, region=region, skill=required_skill(RULES, {"model": model}), min_level=RULES.min_level[severity],
                at=at, preferred=preferred, excluded=frozenset(excluded))
    candidates = [c for c in roster(loads) if c.branch in branches_serving(RULES, city, region) or c.id == preferred]
    return rank(RULES, candidates, need), at


# 2026-11: Monday 23, Tuesday 24, Wednesday 25, Saturday 28. 2026-10-01 (Thursday) is
# National Day; 2026-10-10 (Saturday) a make-up working day (调休).
CASES = [
    # id, city, severity, service level, local time, model, expected, a rule it matched
    ("night 7x24: the on-call engineer of the city", "汉中", "P1", "premium", "2026-11-24 02:00", "S5700-28C-EI", "E-013", "on call (mon duty)"),
    ("business hours: same city, skill, level, then id", "汉中", "P1", "premium", "2026-11-25 10:00", "S5700-28C-EI", "E-013", "at work"),
    ("lunch 7x24: the day's on-call engineer", "汉中", "P1", "premium", "2026-11-25 12:30", "S5700-28C-EI", "E-015", "on call (wed duty)"),
    ("weekend 7x24", "汉中", "P1", "premium", "2026-11-28 15:00", "S5700-28C-EI", "E-015", "on call (sat duty)"),
    ("holiday 7x24: the weekday's duty covers it", "汉中", "P1", "premium", "2026-10-01 10:00", "S5700-28C-EI", "E-013", "on call (thu duty)"),
    ("night 5x8: whoever works when service resumes", "汉中", "P1", "standard", "2026-11-24 02:00", "S5700-28C-EI", "E-013", "at work"),
    # Lunch is outside cn-business hours: a 5x8 ticket waits for 13:00, so the day's
    # on-call engineer (E-015, as on 7x24 above) is passed over for whoever is back at work.
    ("lunch 5x8: whoever is at work when service resumes at 13:00", "汉中", "P1", "standard", "2026-11-25 12:30", "S5700-28C-EI", "E-013", "at work"),
    ("make-up Saturday: a working day", "汉中", "P3", "standard", "2026-10-10 10:00", "致远 A8", "E-016", "skill oa"),
    ("P3: the lowest level that suffices", "汉中", "P3", "standard", "2026-11-25 10:00", "unknown", "E-016", "level L1 (needs L1)"),
    ("skill within the city", "汉中", "P1", "premium", "2026-11-25 10:00", "OceanStor 5310", "E-014", "skill storage"),
    # Within a tier distance does not count: 安康 is nearer 商洛, but both branches are 陕南.
    ("a city without a branch: same region", "商洛", "P1", "premium", "2026-11-24 02:00", "S5700-28C-EI", "E-013", "same region (汉中)"),
]


@pytest.mark.parametrize(("city", "severity", "level", "when", "model", "expected", "rule"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_who_gets_the_ticket(city: str, severity: str, level: str, when: str, model: str, expected: str, rule: str) -> None:
    ranking, _ = choose(city, severity, level, when, model=model)
    best = ranking.matches[0]
    assert best.candidate.id == expected, [m.candidate.id for m in ranking.matches]
    assert rule in best.rules


def test_region_beats_skill() -> None:
    # At 02:00 the 汉中 on-call back-up (E-019) has no network skill, the 安康 one (E-020) has:
    # the engineer in the site's own city still comes first, the specialist next.
    ranking, _ = choose("汉中", "P1", "premium", "2026-11-24 02:00", excluded=("E-013",))
    first, second = ranking.matches[:2]
    assert (first.candidate.id, second.candidate.id) == ("E-019", "E-020")
    assert "skill network" not in first.rules and "skill network" in second.rules


def test_the_head_office_covers_every_region_last() -> None:
    ranking, _ = choose("延安", "P1", "premium", "2026-11-24 02:00")
    assert [m.candidate.id for m in ranking.matches] == ["E-030", "E-005", "E-002"]
    assert "same region (榆林)" in ranking.matches[0].rules and "head office (西安)" in ranking.matches[1].rules


def test_declines_walk_down_the_order() -> None:
    order = [m.candidate.id for m in choose("汉中", "P1", "premium", "2026-11-24 02:00")[0].matches]
    assert order == ["E-013", "E-019", "E-020", "E-005", "E-002"]  # city, city, region, head office L2, then L3


def test_a_5x8_ticket_out_of_hours_waits_for_the_service_day_not_the_on_call_engineer() -> None:
    ranking, at = choose("汉中", "P1", "standard", "2026-11-28 15:00")  # Saturday afternoon
    assert at == local("2026-11-30 09:00")  # Monday morning
    assert all("at work" in m.rules or "on call (mon duty)" in m.rules for m in ranking.matches)
    lunch, resumes = choose("汉中", "P1", "standard", "2026-11-25 12:30")  # Wednesday lunch
    assert resumes == local("2026-11-25 13:00")
    assert all("at work" in m.rules for m in lunch.matches)
    _, holiday = choose("汉中", "P1", "standard", "2026-10-01 10:00")
    assert holiday == local("2026-10-08 09:00")  # after the National Day week


def test_the_dedicated_engineer_first_when_on_duty_else_the_rota() -> None:
    day, _ = choose("西安", "P1", "premium", "2026-11-25 10:00", preferred="E-001")
    assert day.matches[0].candidate.id == "E-001" and "dedicated engineer (专人专线)" in day.matches[0].rules
    night, _ = choose("西安", "P1", "premium", "2026-11-24 02:00", preferred="E-001")
    assert night.matches[0].candidate.id == "E-005" and night.preferred_rejected == "off duty"


def test_least_loaded_then_capacity() -> None:
    busy, _ = choose("汉中", "P1", "premium", "2026-11-25 10:00", loads={"E-013": 2})
    assert busy.matches[0].candidate.id == "E-015"  # same city, skill and level; fewer tickets
    full, _ = choose("汉中", "P1", "premium", "2026-11-24 02:00", loads={"E-013": 3, "E-019": 3})
    assert full.matches[0].candidate.id == "E-020" and full.rejected["at capacity"] == 2


def test_nobody_fits_says_why() -> None:
    everyone = ("E-013", "E-019", "E-020", "E-005", "E-002")
    ranking, _ = choose("汉中", "P1", "premium", "2026-11-24 02:00", excluded=everyone)
    assert ranking.matches == ()
    assert ranking.rejected == {"excluded from this ticket": 5, "off duty": 11, "below L2": 7, "inactive": 1}
    assert ranking.why_nobody() == "no engineer fits: 11 off duty, 7 below L2, 5 excluded from this ticket, 1 inactive"


@pytest.mark.parametrize(("when", "expected"), [
    ("2026-11-24 08:59", "on call (mon duty)"),  # the duty day runs to 09:00 the next day
    ("2026-11-24 09:00", "at work"),
    ("2026-11-24 12:30", "on call (tue duty)"),  # lunch is outside the office hours
    ("2026-11-24 18:00", "on call (tue duty)"),
    ("2026-11-25 12:30", None),  # not E-013's duty day
    ("2026-10-01 10:00", "on call (thu duty)"),  # National Day
    ("2026-10-10 10:00", "at work"),  # make-up Saturday
])
def test_duty_of_an_office_engineer_on_call_monday_and_thursday(when: str, expected: str | None) -> None:
    e013 = next(c for c in roster() if c.id == "E-013")
    assert duty(RULES, replace(e013.rota, on_call=("mon", "tue", "thu")), local(when)) == expected


def test_skills_from_the_catalogue() -> None:
    assert required_skill(RULES, {"model": "S5700-28C-EI"}) == "network"
    assert required_skill(RULES, {"model": "usg6550"}) == "security"  # case-insensitive
    assert required_skill(RULES, {"product": "database", "model": "whatever"}) == "database"
    assert required_skill(RULES, {"product": "Oracle 19c"}) == "database"
    assert required_skill(RULES, {}) is None


def test_spare_units_nearest_warehouse_first() -> None:
    options = [UnitOption("SP-XA-001", "WH-XA"), UnitOption("SP-YL-001", "WH-YL"), UnitOption("SP-AK-001", "WH-AK"),
               UnitOption("SP-HZ-001", "WH-HZ")]
    ranked = nearest_first(RULES, options, "汉中")
    assert [o.code for o, _ in ranked] == ["SP-HZ-001", "SP-AK-001", "SP-XA-001", "SP-YL-001"]
    assert ranked[0][1] == 0.0 and 180 < ranked[1][1] < 200
    unknown = nearest_first(RULES, options, "北京")  # no position: by warehouse code
    assert [o.code for o, _ in unknown] == ["SP-AK-001", "SP-HZ-001", "SP-XA-001", "SP-YL-001"]
    assert {km for _, km in unknown} == {None}
