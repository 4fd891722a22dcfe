"""SLA clocks: per target, when it started, when it paused, when it was met, and what
that means at any instant. The Ticket aggregate keeps one `SlaClocks` and moves it
with its events; everything that reads "now" is a pure function of the clocks.

A clock's budget is consumed only by working time on its calendar while it runs:
paused time (awaiting the customer) and non-working time both count for nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from shared.sla.calendar import WorkingCalendar, add_working_time, working_seconds_between
from shared.sla.policy import CALLBACK, Policy
from shared.sla.targets import Plan


class ClockState(StrEnum):
    NOT_APPLICABLE = "not_applicable"
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"
    STOPPED = "stopped"  # the ticket was cancelled or closed before the target was met


@dataclass
class Clock:
    target: str
    seconds: float
    calendar: str
    rule: str
    policy_version: str
    cycle: int = 0  # 0: not started yet; each start (a reopen, a new resolution) is a new cycle
    started_at: datetime | None = None
    met_at: datetime | None = None
    stopped_at: datetime | None = None
    pauses: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    warned: bool = False
    breached: bool = False

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.met_at is None and self.stopped_at is None

    def start(self, at: datetime) -> None:
        self.cycle += 1
        self.started_at, self.met_at, self.stopped_at = at, None, None
        self.pauses, self.warned, self.breached = [], False, False

    def running_intervals(self, *, as_if_running: bool = False) -> list[tuple[datetime, datetime | None]]:
        """The spans during which this cycle's budget was being consumed. With
        `as_if_running`, the last span runs on past the met or stop instant."""
        if self.started_at is None:
            return []
        spans: list[tuple[datetime, datetime | None]] = []
        begin: datetime | None = self.started_at
        for paused, resumed in self.pauses:
            spans.append((begin, paused))  # type: ignore[arg-type]
            begin = resumed
            if resumed is None:
                break
        if begin is not None:
            spans.append((begin, None if as_if_running else self.met_at or self.stopped_at))
        return spans


@dataclass
class SlaClocks:
    policy_version: str | None = None
    clocks: dict[str, Clock] = field(default_factory=dict)

    def commit(self, plan: Plan, start: datetime, *, restart: bool) -> None:
        """Take a (new) plan. With `restart`, targets begin again at `start` (a severity
        change under `from_change`); otherwise started clocks keep their history."""
        self.policy_version = plan.policy_version
        for planned in plan.targets:
            clock = self.clocks.get(planned.target)
            if clock is None:
                clock = self.clocks[planned.target] = Clock(
                    planned.target, planned.seconds, planned.calendar, planned.rule, plan.policy_version
                )
            else:
                clock.seconds, clock.calendar, clock.rule = planned.seconds, planned.calendar, planned.rule
                clock.policy_version = plan.policy_version
            owed = planned.target != CALLBACK and (planned.target != "on_site" or plan.on_site_by_default)
            if owed and (clock.started_at is None or (restart and clock.running)):
                clock.start(start)
        for gone in set(self.clocks) - {p.target for p in plan.targets}:
            self.clocks[gone].stopped_at = self.clocks[gone].stopped_at or start

    def start(self, target: str, at: datetime) -> None:
        if (clock := self.clocks.get(target)) is not None:
            clock.start(at)

    def start_if_idle(self, target: str, at: datetime) -> None:
        clock = self.clocks.get(target)
        if clock is not None and clock.started_at is None:
            clock.start(at)

    def meet(self, target: str, at: datetime) -> None:
        clock = self.clocks.get(target)
        if clock is not None and clock.running:
            self._close_pause(clock, at)
            clock.met_at = at

    def pause(self, at: datetime) -> None:
        for clock in self.clocks.values():
            if clock.running and not _paused(clock):
                clock.pauses.append((at, None))

    def resume(self, at: datetime) -> None:
        for clock in self.clocks.values():
            self._close_pause(clock, at)

    def stop(self, at: datetime, targets: tuple[str, ...] | None = None) -> None:
        for clock in self.clocks.values():
            if clock.running and (targets is None or clock.target in targets):
                self._close_pause(clock, at)
                clock.stopped_at = at

    @staticmethod
    def _close_pause(clock: Clock, at: datetime) -> None:
        if _paused(clock):
            clock.pauses[-1] = (clock.pauses[-1][0], at)


def _paused(clock: Clock) -> bool:
    return bool(clock.pauses) and clock.pauses[-1][1] is None


@dataclass(frozen=True)
class TargetView:
    target: str
    state: ClockState
    cycle: int
    rule: str
    calendar: str
    policy_version: str
    target_seconds: float
    started_at: datetime | None
    due_at: datetime | None
    warning_at: datetime | None
    met_at: datetime | None
    elapsed_seconds: float
    remaining_seconds: float


def elapsed(clock: Clock, calendar: WorkingCalendar, now: datetime) -> float:
    total = 0.0
    for begin, end in clock.running_intervals():
        stop = now if end is None else min(end, now)
        total += working_seconds_between(calendar, begin, stop)
    return total


def instant_of(clock: Clock, calendar: WorkingCalendar, budget: float, *, as_if_running: bool = False) -> datetime | None:
    """When this cycle's consumed working time reaches `budget`; None if the clock
    paused before it did (it then depends on when work resumes) or, unless
    `as_if_running`, was met or stopped before it did."""
    used = 0.0
    for begin, end in clock.running_intervals(as_if_running=as_if_running):
        if end is None:
            return add_working_time(calendar, begin, budget - used)
        span = working_seconds_between(calendar, begin, end)
        if used + span >= budget:
            return add_working_time(calendar, begin, budget - used)
        used += span
    return None


def view(clock: Clock, policy: Policy, now: datetime) -> TargetView:
    calendar = policy.calendars[clock.calendar]
    used = elapsed(clock, calendar, now)
    due = instant_of(clock, calendar, clock.seconds, as_if_running=True)
    if clock.started_at is None:
        state = ClockState.NOT_APPLICABLE
    elif clock.breached or (due is not None and due < (clock.met_at or clock.stopped_at or now)):
        state = ClockState.BREACHED
    elif clock.met_at is not None:
        state = ClockState.MET
    elif clock.stopped_at is not None:
        state = ClockState.STOPPED
    else:
        state = ClockState.PAUSED if _paused(clock) else ClockState.RUNNING
    return TargetView(
        target=clock.target, state=state, cycle=clock.cycle, rule=clock.rule, calendar=clock.calendar,
        policy_version=clock.policy_version, target_seconds=clock.seconds, started_at=clock.started_at,
        due_at=due, warning_at=instant_of(clock, calendar, clock.seconds * policy.warning_ratio, as_if_running=True),
        met_at=clock.met_at, elapsed_seconds=round(used, 3), remaining_seconds=round(max(0.0, clock.seconds - used), 3),
    )


@dataclass(frozen=True)
class Alert:
    kind: str  # "warning" or "breach"
    target: str
    cycle: int
    due_at: datetime


def pending_alerts(clocks: SlaClocks, policy: Policy) -> list[Alert]:
    """Every warning and breach a running clock still owes, whenever it falls due."""
    alerts = []
    for clock in clocks.clocks.values():
        if not clock.running:
            continue
        calendar = policy.calendars[clock.calendar]
        if not clock.warned and (at := instant_of(clock, calendar, clock.seconds * policy.warning_ratio)):
            alerts.append(Alert("warning", clock.target, clock.cycle, at))
        if not clock.breached and (at := instant_of(clock, calendar, clock.seconds)):
            alerts.append(Alert("breach", clock.target, clock.cycle, at))
    return sorted(alerts, key=lambda a: a.due_at)


def due_alerts(clocks: SlaClocks, policy: Policy, now: datetime) -> list[Alert]:
    """What must be recorded at `now`. A warning whose breach is also due is dropped:
    the history should say "breached", not "warned" a moment before."""
    due = [a for a in pending_alerts(clocks, policy) if a.due_at <= now]
    breached = {(a.target, a.cycle) for a in due if a.kind == "breach"}
    return [a for a in due if a.kind == "breach" or (a.target, a.cycle) not in breached]
