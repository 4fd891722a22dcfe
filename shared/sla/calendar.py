"""Working-time arithmetic on business calendars, for SLA deadlines. Pure functions.

A `WorkingCalendar` says which wall-clock hours of which local dates (in its zone)
are working time. `add_working_time` turns "N working seconds after receipt" into a
deadline; `working_seconds_between` measures how much of a budget was consumed.
Every datetime going in must be timezone-aware; every datetime coming out is UTC.
Resolution is one microsecond (durations are rounded to it).

Conventions
-----------
Segments
    A `Segment` is the wall-clock span [start, end) of one local day. `end` must be
    after `start`, except that `end == END_OF_DAY` (which is `time(0)`) means the
    midnight ending the day, 24:00, so `Segment(time(0), END_OF_DAY)` is a whole day.
Daylight saving time
    A wall time maps to the instant it first occurs; a wall time skipped by a
    spring-forward gap maps to the transition instant. So a 02:00-03:00 segment is
    empty on the day the clock jumps from 02:00 to 03:00, and lasts two hours on the
    day 02:00-03:00 is repeated. The mapping never goes backwards, so the working
    intervals of a calendar never overlap.
Deadlines (`add_working_time`)
    The deadline is the *last* instant at which at most `seconds` of working time
    have elapsed since `start`. Hence, for every t >= start:

        t <= add_working_time(cal, start, d)  <=>  working_seconds_between(cal, start, t) <= d

    i.e. a target is met exactly when the working time consumed stays within budget,
    and working_seconds_between(cal, start, add_working_time(cal, start, d)) == d.
    The deadline is always a working instant: a budget used up exactly at a segment's
    end (1 h from Friday 17:00) falls due at the start of the next segment (Monday
    09:00), because the weekend consumes nothing; and d == 0 gives
    next_working_instant(start), e.g. Monday 09:00 for a ticket received on Saturday.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import cache
from types import MappingProxyType
from zoneinfo import ZoneInfo

UTC = timezone.utc
END_OF_DAY = time(0)
_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Segment:
    """Working span [start, end) of wall-clock time within one local day (see module doc)."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("segment times are wall-clock times in the calendar's zone; give them without tzinfo")
        if self.end_offset <= self.start_offset:
            raise ValueError(f"segment end {self.end} is not after its start {self.start}")

    @property
    def start_offset(self) -> timedelta:
        return _since_midnight(self.start)

    @property
    def end_offset(self) -> timedelta:
        return _DAY if self.end == END_OF_DAY else _since_midnight(self.end)


@dataclass(frozen=True)
class WorkingCalendar:
    """When work happens: weekly hours, minus holidays, plus make-up working days (调休).

    Dates are local dates in `zone`. A holiday has no working time at all; a make-up
    working day uses `makeup_segments` instead of its weekday's segments. `known_years`
    are the years whose holiday data is official; None means the calendar needs none.
    """

    name: str
    zone: ZoneInfo
    week: Mapping[int, tuple[Segment, ...]]
    holidays: frozenset[date]
    makeup_workdays: frozenset[date]
    makeup_segments: tuple[Segment, ...]
    known_years: frozenset[int] | None
    # Each local date's working intervals, worked out once: every deadline, warning and
    # elapsed time walks the same few days again (the calendar is frozen, so they stay).
    _days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not set(self.week) <= set(range(7)):
            raise ValueError(f"week keys must be weekdays 0 (Monday) .. 6 (Sunday), got {sorted(self.week)}")
        week = {weekday: tuple(segments) for weekday, segments in self.week.items()}
        for segments in (*week.values(), tuple(self.makeup_segments)):
            _check_ordered(segments)
        if not any(week.values()):
            # Holidays are finite, so weekly hours guarantee every deadline is reachable.
            raise ValueError(f"calendar {self.name!r} has no weekly working time")
        if self.makeup_workdays and not self.makeup_segments:
            raise ValueError(f"calendar {self.name!r} has make-up working days but no make-up segments")
        if clash := set(self.holidays) & set(self.makeup_workdays):
            raise ValueError(f"dates both holiday and make-up working day: {sorted(clash)}")
        # Frozen means frozen: callers must not be able to change the hours under a running clock.
        object.__setattr__(self, "week", MappingProxyType(week))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        object.__setattr__(self, "makeup_workdays", frozenset(self.makeup_workdays))
        object.__setattr__(self, "makeup_segments", tuple(self.makeup_segments))
        if self.known_years is not None:
            object.__setattr__(self, "known_years", frozenset(self.known_years))


def always(name: str = "always", zone: str = "Asia/Shanghai") -> WorkingCalendar:
    """A 7x24 calendar: every instant is working time."""
    whole_day = (Segment(time(0), END_OF_DAY),)
    return WorkingCalendar(
        name=name,
        zone=ZoneInfo(zone),
        week={weekday: whole_day for weekday in range(7)},
        holidays=frozenset(),
        makeup_workdays=frozenset(),
        makeup_segments=(),
        known_years=None,
    )


def add_working_time(cal: WorkingCalendar, start: datetime, seconds: float) -> datetime:
    """The deadline `seconds` of working time after `start`: the last instant still within budget."""
    remaining = _duration(seconds)
    intervals = _intervals_from(cal, _to_utc(start))
    begin, end = next(intervals)
    while remaining >= end - begin:
        remaining -= end - begin
        begin, end = next(intervals)
    return begin + remaining


def working_seconds_between(cal: WorkingCalendar, start: datetime, end: datetime) -> float:
    """Working seconds in [start, end); 0 if end <= start."""
    since, until = _to_utc(start), _to_utc(end)
    if until <= since:
        return 0.0
    total = timedelta(0)
    for begin, stop in _intervals_from(cal, since):
        if begin >= until:
            break
        total += min(stop, until) - begin
    return total.total_seconds()


def is_working_instant(cal: WorkingCalendar, t: datetime) -> bool:
    """Whether `t` lies inside a segment (a segment's start is working time, its end is not)."""
    instant = _to_utc(t)  # compare in UTC: cross-zone == is always False for DST-ambiguous times
    return next_working_instant(cal, instant) == instant


def next_working_instant(cal: WorkingCalendar, t: datetime) -> datetime:
    """`t` itself (in UTC) if it is working time, else the start of the next segment."""
    begin, _ = next(_intervals_from(cal, _to_utc(t)))
    return begin


def unknown_years(cal: WorkingCalendar, start: datetime, end: datetime) -> list[int]:
    """Local years touched by [start, end] that lack official holiday data, ascending.

    A deadline reaching into such a year was computed without that year's holidays
    and make-up days; callers flag it rather than present a guess as contractual.
    """
    since, until = _to_utc(start), _to_utc(end)
    if until < since:
        raise ValueError(f"end {end} is before start {start}")
    if cal.known_years is None:
        return []
    first, last = since.astimezone(cal.zone).year, until.astimezone(cal.zone).year
    return [year for year in range(first, last + 1) if year not in cal.known_years]


def _intervals_from(cal: WorkingCalendar, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The working intervals after `instant`, in order, the first clipped to begin no earlier. Endless."""
    day = instant.astimezone(cal.zone).date()
    while True:
        for begin, end in _day_intervals(cal, day):
            if end > instant:
                yield max(begin, instant), end
        day += _DAY


def _day_intervals(cal: WorkingCalendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    """The non-empty UTC intervals of the segments worked on local date `day`."""
    known = cal._days.get(day)
    if known is None:
        known = cal._days[day] = tuple(_worked_on(cal, day))
    return known


def _worked_on(cal: WorkingCalendar, day: date) -> Iterator[tuple[datetime, datetime]]:
    if day in cal.holidays:
        return
    segments = cal.makeup_segments if day in cal.makeup_workdays else cal.week.get(day.weekday(), ())
    for segment in segments:
        begin = _wall_to_utc(cal.zone, day, segment.start)
        if segment.end == END_OF_DAY:
            end = _wall_to_utc(cal.zone, day + _DAY, END_OF_DAY)
        else:
            end = _wall_to_utc(cal.zone, day, segment.end)
        if end > begin:  # empty when the whole segment falls into a spring-forward gap
            yield begin, end


def _wall_to_utc(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The instant the wall time `wall` on `day` first occurs in `zone` (see module doc on DST)."""
    # Built with combine rather than replace(): this is the hot path, and replace is slow.
    first = datetime.combine(day, _with_fold(wall, 0), zone).astimezone(UTC)
    second = datetime.combine(day, _with_fold(wall, 1), zone).astimezone(UTC)
    if second >= first:  # an ordinary wall time, or one a fall-back repeats
        return first
    # Skipped wall time: fold=0 reads it with the offset before the jump, fold=1 with
    # the one after, so the transition lies in (second, first].
    return _transition(zone, second, first)


@cache
def _with_fold(wall: time, fold: int) -> time:
    return wall.replace(fold=fold)


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant in (before, after] whose UTC offset in `zone` is that of `after`."""
    new_offset = after.astimezone(zone).utcoffset()
    while after - before > _MICROSECOND:
        middle = before + (after - before) // 2
        if middle.astimezone(zone).utcoffset() == new_offset:
            after = middle
        else:
            before = middle
    return after


def _check_ordered(segments: tuple[Segment, ...]) -> None:
    for earlier, later in zip(segments, segments[1:]):
        if later.start_offset < earlier.end_offset:
            raise ValueError(f"segments must be in order and must not overlap: {earlier} then {later}")


def _since_midnight(wall: time) -> timedelta:
    return timedelta(hours=wall.hour, minutes=wall.minute, seconds=wall.second, microseconds=wall.microsecond)


def _to_utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t!r}: SLA arithmetic needs timezone-aware datetimes")
    return t.astimezone(UTC)


def _duration(seconds: float) -> timedelta:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"working time must be a finite, non-negative number of seconds, got {seconds!r}")
    return timedelta(seconds=seconds)
