"""Business-calendar arithmetic: properties on several calendars, then worked SLA cases."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from holidays.countries.china import China
from hypothesis import given
from hypothesis import strategies as st

from shared.sla import calendar as sla_calendar
from shared.sla.calendar import (
    END_OF_DAY,
    Segment,
    WorkingCalendar,
    add_working_time,
    always,
    is_working_instant,
    next_working_instant,
    unknown_years,
    working_seconds_between,
)
from shared.sla.cn_holidays import CN_OFFICE_HOURS, cn_business_calendar, official_years

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600.0
OVERRIDE_FILE = Path(__file__).resolve().parents[2] / "deploy" / "calendars" / "cn-holidays-override.toml"


def seg(start: str, end: str) -> Segment:
    return Segment(time.fromisoformat(start), END_OF_DAY if end == "24:00" else time.fromisoformat(end))


CN = cn_business_calendar()
ALWAYS = always()
# Office hours plus weekend night shifts whose wall times the DST switches skip or repeat
# (Berlin switches on the last Sunday of March and October, between 02:00 and 03:00).
BERLIN_SHIFTS = WorkingCalendar(
    name="berlin-shifts",
    zone=BERLIN,
    week={
        **{weekday: (seg("09:00", "12:00"), seg("13:00", "18:00")) for weekday in range(5)},
        5: (seg("20:00", "24:00"),),
        6: (seg("00:00", "01:00"), seg("01:30", "02:30"), seg("03:00", "04:00")),
    },
    holidays=frozenset({date(2026, 3, 30), date(2026, 12, 25)}),
    makeup_workdays=frozenset({date(2026, 10, 24)}),
    makeup_segments=(seg("02:00", "03:00"), seg("10:00", "11:00")),
    known_years=None,
)
NEW_YORK_NIGHTS = WorkingCalendar(
    name="new-york-nights",
    zone=NEW_YORK,
    week={weekday: (seg("01:00", "02:00"), seg("02:30", "03:30"), seg("22:00", "24:00")) for weekday in range(7)},
    holidays=frozenset(),
    makeup_workdays=frozenset(),
    makeup_segments=(),
    known_years=None,
)
CALENDARS = [CN, ALWAYS, BERLIN_SHIFTS, NEW_YORK_NIGHTS]

# Days around holiday blocks, make-up days and DST switches, which random dates rarely hit.
EDGE_DATES = [
    date(2026, 9, 18), date(2026, 9, 20), date(2026, 9, 30), date(2026, 10, 8), date(2026, 10, 9),
    date(2026, 10, 10), date(2026, 2, 13), date(2026, 2, 14), date(2025, 12, 31),
    date(2026, 3, 8), date(2026, 3, 28), date(2026, 3, 29), date(2026, 10, 24), date(2026, 10, 25),
    date(2026, 11, 1), date(2026, 12, 24),
]
EDGE_TIMES = [
    time.fromisoformat(wall)
    for wall in ["00:00", "01:00", "01:30", "02:00", "02:30", "03:00", "04:00", "09:00", "11:50", "12:00", "13:00",
                 "17:30", "18:00", "20:00", "22:00"]
]


@st.composite
def instants(draw: st.DrawFn, zone: ZoneInfo) -> datetime:
    """UTC instants, often at a segment edge on an interesting local day."""
    if draw(st.booleans()):
        return draw(st.datetimes(datetime(2025, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)))
    day = draw(st.sampled_from(EDGE_DATES) | st.dates(date(2025, 1, 1), date(2026, 12, 31)))
    wall = datetime.combine(day, draw(st.sampled_from(EDGE_TIMES)), tzinfo=zone)
    return wall.replace(fold=draw(st.integers(0, 1))).astimezone(UTC)


# Whole microseconds, so sums of durations are exact; up to about ten working weeks.
durations = st.integers(0, 400 * 3600 * 10**6).map(lambda us: us / 10**6) | st.sampled_from([0.0, 1800.0, HOUR])

calendars = pytest.mark.parametrize("cal", CALENDARS, ids=lambda cal: cal.name)


@calendars
@given(data=st.data())
def test_deadline_is_a_working_instant_with_the_budget_elapsed(cal: WorkingCalendar, data: st.DataObject) -> None:
    start, seconds = data.draw(instants(cal.zone)), data.draw(durations)
    due = add_working_time(cal, start, seconds)
    assert due.tzinfo is UTC
    assert due >= start
    assert is_working_instant(cal, due)
    assert working_seconds_between(cal, start, due) == pytest.approx(seconds, abs=1e-6)


@calendars
@given(data=st.data())
def test_deadline_is_the_last_instant_within_budget(cal: WorkingCalendar, data: st.DataObject) -> None:
    start, seconds = data.draw(instants(cal.zone)), data.draw(durations)
    due = add_working_time(cal, start, seconds)
    assert working_seconds_between(cal, start, due + timedelta(microseconds=1)) > seconds


@calendars
@given(data=st.data())
def test_deadlines_are_monotonic_in_the_budget(cal: WorkingCalendar, data: st.DataObject) -> None:
    start = data.draw(instants(cal.zone))
    shorter, longer = sorted([data.draw(durations), data.draw(durations)])
    assert add_working_time(cal, start, shorter) <= add_working_time(cal, start, longer)


@calendars
@given(data=st.data())
def test_adding_in_two_steps_equals_adding_the_sum(cal: WorkingCalendar, data: st.DataObject) -> None:
    start, first, second = data.draw(instants(cal.zone)), data.draw(durations), data.draw(durations)
    in_two_steps = add_working_time(cal, add_working_time(cal, start, first), second)
    assert in_two_steps == add_working_time(cal, start, first + second)


@calendars
@given(data=st.data())
def test_elapsed_working_time_adds_up_over_a_split_point(cal: WorkingCalendar, data: st.DataObject) -> None:
    a, b, c = sorted(data.draw(instants(cal.zone)) for _ in range(3))
    whole = working_seconds_between(cal, a, c)
    assert whole == pytest.approx(working_seconds_between(cal, a, b) + working_seconds_between(cal, b, c), abs=1e-6)
    assert working_seconds_between(cal, c, a) == 0.0  # reversed span


@calendars
@given(data=st.data())
def test_next_working_instant_skips_only_non_working_time(cal: WorkingCalendar, data: st.DataObject) -> None:
    t = data.draw(instants(cal.zone))
    following = next_working_instant(cal, t)
    assert following >= t
    assert is_working_instant(cal, following)
    assert working_seconds_between(cal, t, following) == 0.0
    assert add_working_time(cal, t, 0) == following
    assert (following == t) == is_working_instant(cal, t)


@given(start=instants(SHANGHAI), hours=st.integers(0, 24 * 400))
def test_always_is_wall_clock_time(start: datetime, hours: int) -> None:
    assert add_working_time(ALWAYS, start, hours * HOUR) == start + timedelta(hours=hours)
    assert working_seconds_between(ALWAYS, start, start + timedelta(hours=hours)) == hours * HOUR


def shanghai(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("received", "seconds", "due"),
    [
        # P2 response (1 working hour) on a Friday evening: the weekend does not count.
        (shanghai(2026, 11, 20, 17, 30), HOUR, shanghai(2026, 11, 23, 9, 30)),
        # The lunch break does not count.
        (shanghai(2026, 11, 24, 11, 50), 1800, shanghai(2026, 11, 24, 13, 20)),
        # Used up exactly at 12:00: still on time until work resumes.
        (shanghai(2026, 11, 24, 11, 30), 1800, shanghai(2026, 11, 24, 13, 0)),
        # Zero budget on a Saturday: due when work starts again.
        (shanghai(2026, 11, 21, 10, 0), 0, shanghai(2026, 11, 23, 9, 0)),
        # National Day 2026: Oct 1-7 off (Oct 5 observed, Oct 6-7 swapped for Sun Sep 20 and Sat Oct 10).
        (shanghai(2026, 9, 30, 17, 0), HOUR, shanghai(2026, 10, 8, 9, 0)),
        (shanghai(2026, 9, 30, 17, 0), 2 * HOUR, shanghai(2026, 10, 8, 10, 0)),
        # Sep 30 17-18 (1 h), Oct 8 and 9 (8 h each), then the make-up Saturday Oct 10.
        (shanghai(2026, 9, 30, 17, 0), 17.5 * HOUR, shanghai(2026, 10, 10, 9, 30)),
        # The make-up Sunday before: Friday evening falls due on Sunday Sep 20.
        (shanghai(2026, 9, 18, 17, 30), HOUR, shanghai(2026, 9, 20, 9, 30)),
        # Spring Festival 2026: Feb 15 (Sun) to Feb 23 off; Sat Feb 14 and Sat Feb 28 are worked.
        (shanghai(2026, 2, 13, 17, 0), 2 * HOUR, shanghai(2026, 2, 14, 10, 0)),
        (shanghai(2026, 2, 14, 17, 0), 2 * HOUR, shanghai(2026, 2, 24, 10, 0)),
        # 80 working hours = ten working days, from Monday morning.
        (shanghai(2026, 11, 2, 9, 0), 80 * HOUR, shanghai(2026, 11, 16, 9, 0)),
    ],
)
def test_cn_business_deadlines(received: datetime, seconds: float, due: datetime) -> None:
    deadline = add_working_time(CN, received, seconds)
    assert deadline == due.astimezone(UTC)
    assert deadline.tzinfo is UTC
    assert working_seconds_between(CN, received, deadline) == seconds


def test_nothing_falls_due_during_national_day() -> None:
    for day in range(1, 8):
        for hour in (9, 10, 14, 17):
            assert not is_working_instant(CN, shanghai(2026, 10, day, hour))
    assert working_seconds_between(CN, shanghai(2026, 9, 30, 18), shanghai(2026, 10, 8, 9)) == 0.0
    assert is_working_instant(CN, shanghai(2026, 10, 10, 9))
    assert not is_working_instant(CN, shanghai(2026, 10, 11, 9))


def test_holidays_are_local_dates_not_utc_dates() -> None:
    """Zammad #3706: a holiday read in UTC would start 8 hours early in Shanghai."""
    round_the_clock = WorkingCalendar(
        name="shanghai-7x24",
        zone=SHANGHAI,
        week={weekday: (seg("00:00", "24:00"),) for weekday in range(7)},
        holidays=frozenset({date(2026, 10, 1)}),
        makeup_workdays=frozenset(),
        makeup_segments=(),
        known_years=frozenset({2026}),
    )
    assert is_working_instant(round_the_clock, datetime(2026, 9, 30, 15, 59, 59, tzinfo=UTC))
    assert not is_working_instant(round_the_clock, datetime(2026, 9, 30, 16, 0, tzinfo=UTC))
    assert not is_working_instant(round_the_clock, datetime(2026, 10, 1, 15, 59, 59, tzinfo=UTC))
    assert is_working_instant(round_the_clock, datetime(2026, 10, 1, 16, 0, tzinfo=UTC))
    # Sep 30 08:00 to 24:00 local, then Oct 2 00:00 to 08:00 local.
    assert working_seconds_between(
        round_the_clock, datetime(2026, 9, 30, 0, 0, tzinfo=UTC), datetime(2026, 10, 2, 0, 0, tzinfo=UTC)
    ) == 24 * HOUR
    assert add_working_time(round_the_clock, datetime(2026, 9, 30, 15, 0, tzinfo=UTC), 2 * HOUR) == datetime(
        2026, 10, 1, 17, 0, tzinfo=UTC
    )


def test_a_segment_in_the_spring_forward_gap_is_empty_and_in_the_fall_back_hour_doubles() -> None:
    def worked_on(day: date) -> float:
        return working_seconds_between(
            NEW_YORK_NIGHTS, datetime.combine(day, time(0), NEW_YORK), datetime.combine(day, time(4), NEW_YORK)
        )

    assert worked_on(date(2026, 3, 7)) == 2 * HOUR
    # The clock jumps from 02:00 to 03:00: 01:00-02:00 is whole, 02:30-03:30 keeps 03:00-03:30.
    assert worked_on(date(2026, 3, 8)) == 1.5 * HOUR
    # 02:00 EDT falls back to 01:00 EST: 01:00-02:00 spans both 01:00s.
    assert worked_on(date(2026, 11, 1)) == 3 * HOUR
    assert add_working_time(NEW_YORK_NIGHTS, datetime(2026, 3, 7, 3, 0, tzinfo=NEW_YORK), HOUR) == datetime(
        2026, 3, 7, 22, 30, tzinfo=NEW_YORK
    ).astimezone(UTC)
    # 01:30-02:00 EST, then the 02:30 segment resumes at the jump (03:00 EDT).
    assert add_working_time(NEW_YORK_NIGHTS, datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK), 50 * 60) == datetime(
        2026, 3, 8, 3, 20, tzinfo=NEW_YORK
    ).astimezone(UTC)
    assert is_working_instant(NEW_YORK_NIGHTS, datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC))  # 01:59:59 EST
    assert is_working_instant(NEW_YORK_NIGHTS, datetime(2026, 3, 8, 7, 0, tzinfo=UTC))  # 03:00 EDT
    assert not is_working_instant(NEW_YORK_NIGHTS, datetime(2026, 3, 8, 7, 30, tzinfo=UTC))  # 03:30 EDT

    skipped = WorkingCalendar(
        "skipped", NEW_YORK, {6: (seg("02:05", "02:25"), seg("03:15", "03:30"))}, frozenset(), frozenset(), (), None
    )
    due = datetime(2026, 3, 8, 3, 15, tzinfo=NEW_YORK).astimezone(UTC)
    assert next_working_instant(skipped, datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK)) == due
    assert add_working_time(skipped, datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK), 60) == due + timedelta(minutes=1)


def test_berlin_office_day_across_dst_and_make_up_segments() -> None:
    def sunday(day: int, month: int) -> float:
        midnight = datetime(2026, month, day, 0, 0, tzinfo=BERLIN)
        return working_seconds_between(BERLIN_SHIFTS, midnight, midnight.replace(hour=12))

    assert sunday(22, 3) == 3 * HOUR
    # The clock jumps from 02:00 to 03:00: 01:30-02:30 keeps only 01:30-02:00, and must not
    # overlap 03:00-04:00 (read with the winter offset, 02:30 would be 03:30 summer time).
    assert sunday(29, 3) == 2.5 * HOUR
    # 03:00 falls back to 02:00: 01:30-02:30 ends at the first 02:30, before the repeat.
    assert sunday(25, 10) == 3 * HOUR
    # Saturday Oct 24 is a make-up day: its own segments replace the Saturday night shift.
    assert is_working_instant(BERLIN_SHIFTS, datetime(2026, 10, 24, 10, 30, tzinfo=BERLIN))
    assert not is_working_instant(BERLIN_SHIFTS, datetime(2026, 10, 24, 21, 0, tzinfo=BERLIN))
    # Monday Mar 30 is a holiday: Friday 17:00 + 2 h runs through the weekend shifts.
    friday = datetime(2026, 3, 27, 17, 0, tzinfo=BERLIN)
    saturday_night = datetime(2026, 3, 28, 21, 0, tzinfo=BERLIN)
    tuesday_morning = datetime(2026, 3, 31, 9, 30, tzinfo=BERLIN)
    assert add_working_time(BERLIN_SHIFTS, friday, 2 * HOUR) == saturday_night.astimezone(UTC)
    assert add_working_time(BERLIN_SHIFTS, friday, 8 * HOUR) == tuesday_morning.astimezone(UTC)


def test_naive_datetimes_and_bad_budgets_are_rejected() -> None:
    naive = datetime(2026, 11, 20, 17, 30)
    aware = shanghai(2026, 11, 20, 17, 30)
    for call in (
        lambda: add_working_time(CN, naive, HOUR),
        lambda: working_seconds_between(CN, naive, aware),
        lambda: working_seconds_between(CN, aware, naive),
        lambda: is_working_instant(CN, naive),
        lambda: next_working_instant(CN, naive),
        lambda: unknown_years(CN, naive, aware),
        lambda: add_working_time(CN, aware, -1),
        lambda: add_working_time(CN, aware, float("nan")),
        lambda: add_working_time(CN, aware, float("inf")),
        lambda: unknown_years(CN, aware, aware - timedelta(seconds=1)),
    ):
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ((seg("09:00", "13:00"), seg("12:00", "18:00")), "overlap"),
        ((seg("13:00", "18:00"), seg("09:00", "12:00")), "order"),
    ],
)
def test_segments_must_be_ordered_and_disjoint(segments: tuple[Segment, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkingCalendar("bad", SHANGHAI, {0: segments}, frozenset(), frozenset(), (), None)


def test_calendar_rejects_contradictions() -> None:
    office = {0: CN_OFFICE_HOURS}
    with pytest.raises(ValueError, match="no weekly working time"):
        WorkingCalendar("idle", SHANGHAI, {0: ()}, frozenset(), frozenset(), (), None)
    with pytest.raises(ValueError, match="no make-up segments"):
        WorkingCalendar("x", SHANGHAI, office, frozenset(), frozenset({date(2026, 10, 10)}), (), None)
    both = frozenset({date(2026, 10, 10)})
    with pytest.raises(ValueError, match="both holiday and make-up"):
        WorkingCalendar("x", SHANGHAI, office, both, both, CN_OFFICE_HOURS, None)
    with pytest.raises(ValueError, match="weekdays"):
        WorkingCalendar("x", SHANGHAI, {7: CN_OFFICE_HOURS}, frozenset(), frozenset(), (), None)
    with pytest.raises(ValueError, match="without tzinfo"):
        Segment(time(9, tzinfo=UTC), time(12))
    for start, end in (("12:00", "09:00"), ("09:00", "09:00")):
        with pytest.raises(ValueError, match="not after"):
            seg(start, end)
    assert seg("00:00", "24:00").end_offset == timedelta(days=1)


def test_a_year_long_span_is_computed_per_day_not_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    received = shanghai(2026, 1, 5, 9, 0)
    year_of_work = 250 * 8 * HOUR
    # Counted, not timed: a day-by-day walk needs about one lookup per calendar day.
    day_lookups = 0
    real = sla_calendar._day_intervals

    def counting(cal: WorkingCalendar, day: date) -> Iterator[tuple[datetime, datetime]]:
        nonlocal day_lookups
        day_lookups += 1
        return real(cal, day)

    monkeypatch.setattr(sla_calendar, "_day_intervals", counting)
    add_working_time(CN, received, year_of_work)
    assert day_lookups <= 400
    day_lookups = 0
    working_seconds_between(CN, received, received + timedelta(days=365))
    assert day_lookups <= 400


def test_unknown_years_flags_deadlines_without_official_data() -> None:
    assert unknown_years(CN, shanghai(2026, 6, 1, 9), shanghai(2026, 6, 2, 9)) == []
    assert unknown_years(CN, shanghai(2031, 1, 5, 9), shanghai(2031, 1, 6, 9)) == [2031]
    # 2026-12-31 20:00 UTC is already 2027 in Shanghai.
    assert unknown_years(CN, datetime(2026, 12, 31, 15, tzinfo=UTC), datetime(2026, 12, 31, 20, tzinfo=UTC)) == [2027]
    assert unknown_years(CN, shanghai(2026, 12, 30, 9), shanghai(2028, 1, 3, 9)) == [2027, 2028]
    assert unknown_years(ALWAYS, shanghai(2031, 1, 5, 9), shanghai(2040, 1, 6, 9)) == []


def test_package_years_with_official_data_are_detected_not_guessed() -> None:
    years = official_years()
    assert {2025, 2026} <= years
    assert CN.known_years == years & set(range(2020, 2031))
    for year in years:  # every official schedule swaps some weekend day...
        assert any(day.year == year for day in China(years=year).weekend_workdays)
    after = max(years) + 1  # ...and the package has none for the year after its data ends
    assert not any(day.year == after for day in China(years=after).weekend_workdays)
    assert not any(day.year == after for day in CN.holidays | CN.makeup_workdays)


def test_override_declares_a_year_and_corrects_the_package(tmp_path: Path) -> None:
    override = tmp_path / "override.toml"
    override.write_text(
        "[years.2027]\n"
        "holidays = [2027-01-01]\n"
        "makeup_workdays = [2027-01-09]\n"
        "[years.2026]\n"
        "remove_holidays = [2026-10-07]\n"
        "remove_makeup_workdays = [2026-10-10]\n"
    )
    cal = cn_business_calendar(override)
    assert cal.known_years is not None and 2027 in cal.known_years
    assert unknown_years(cal, shanghai(2027, 3, 1, 9), shanghai(2027, 3, 2, 9)) == []
    assert unknown_years(CN, shanghai(2027, 3, 1, 9), shanghai(2027, 3, 2, 9)) == [2027]
    assert not is_working_instant(cal, shanghai(2027, 1, 1, 10))
    assert is_working_instant(cal, shanghai(2027, 1, 9, 10))
    assert is_working_instant(cal, shanghai(2026, 10, 7, 10))
    assert not is_working_instant(cal, shanghai(2026, 10, 10, 10))
    assert not is_working_instant(cal, shanghai(2026, 10, 6, 10))  # untouched package data stays


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[years.2027]\nholidays = [2028-01-01]\n", "outside 2027"),
        ("[years.2027]\nmakeup_workdays = [2027-01-04]\n", "weekend"),
        ("[years.2027]\nholiday = [2027-01-01]\n", "unknown keys"),
        ('[years.2027]\nholidays = ["2027-01-01"]\n', "TOML dates"),
        ("[years.2027]\nholidays = [2027-01-01T00:00:00+08:00]\n", "TOML dates"),
        ("[years.27]\nholidays = []\n", "four-digit year"),
        ("[calendar]\n", "top-level"),
        ("[years.2027\n", "not valid TOML"),
        ("[years.2027]\nholidays = [2027-01-01]\nremove_holidays = [2027-01-01]\n", "both"),
        ("[years.2027]\nholidays = [2027-01-09]\nmakeup_workdays = [2027-01-09]\n", "both holiday and make-up"),
    ],
)
def test_override_mistakes_are_reported(tmp_path: Path, text: str, message: str) -> None:
    override = tmp_path / "override.toml"
    override.write_text(text)
    with pytest.raises(ValueError, match=message):
        cn_business_calendar(override)


def test_shipped_override_file_and_its_example_load(tmp_path: Path) -> None:
    shipped = cn_business_calendar(OVERRIDE_FILE)
    assert CN.known_years is not None and shipped.known_years is not None
    assert CN.known_years <= shipped.known_years
    lines = OVERRIDE_FILE.read_text(encoding="utf-8").splitlines()
    example = lines[next(i for i, line in enumerate(lines) if line.startswith("# Example")) + 1 :]
    uncommented = tmp_path / "example.toml"
    uncommented.write_text("\n".join(line.removeprefix("#").removeprefix(" ") for line in example))
    cal = cn_business_calendar(uncommented)
    assert cal.known_years is not None and 2027 in cal.known_years
    assert is_working_instant(cal, shanghai(2027, 2, 20, 10))
    assert not is_working_instant(cal, shanghai(2027, 2, 8, 10))


@pytest.mark.parametrize("year", [2025, 2026])
def test_cn_business_days_match_chinesecalendar(year: int) -> None:
    day = date(year, 1, 1)
    while day.year == year:
        works = is_working_instant(CN, shanghai(day.year, day.month, day.day, 10))
        assert works == chinese_calendar.is_workday(day), day
        day += timedelta(days=1)
    makeup = {d for d in chinese_calendar.constants.workdays if d.year == year}
    assert {d for d in CN.makeup_workdays if d.year == year} == makeup
