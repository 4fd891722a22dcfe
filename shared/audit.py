"""What auditors read: the global feed with filters, a ticket as it stood at any
instant, its timeline in plain words, and the incident report built from it.

Everything here is derived from the event stream by replaying it; nothing is stored.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.domain import DomainEventProtocol

from shared.domain.ticket import Ticket
from shared.event_format import event_type, history_entry, is_internal
from shared.sla.clocks import ClockState, view
from shared.sla.policy import Policy
from shared.store import EventStore

TARGET_NAMES = {"response": "response", "on_site": "on-site", "resolution": "resolution", "callback": "callback"}


@dataclass(frozen=True)
class FeedFilter:
    types: tuple[str, ...] = ()  # exact types or prefixes ending in ".*", e.g. "sla.*"
    streams: frozenset[UUID] | None = None  # None: every stream
    since: datetime | None = None
    until: datetime | None = None
    customers: frozenset[str] | None = None  # only these customers' tickets; None: every stream

    def admits(self, event: DomainEventProtocol[UUID], owners: TicketOwners) -> bool:
        if is_internal(event):
            return False
        if self.streams is not None and event.originator_id not in self.streams:
            return False
        if self.customers is not None and owners.customer(event) not in self.customers:
            return False
        if (self.since and event.timestamp < self.since) or (self.until and event.timestamp >= self.until):
            return False
        kind = event_type(event)
        return not self.types or any(kind == t or (t.endswith(".*") and kind.startswith(t[:-1])) for t in self.types)


class TicketOwners:
    """Whose ticket a stream is, read from the store itself (a read model could trail
    the feed and hide an event for good), once per stream and feed page."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._customers: dict[UUID, str | None] = {}

    def customer(self, event: DomainEventProtocol[UUID]) -> str | None:
        """The customer of the event's ticket; None when the stream is not a ticket."""
        stream = event.originator_id
        if stream not in self._customers:
            first = event if event.originator_version == 1 else next(iter(self.store.events.get(stream, lte=1)), None)
            self._customers[stream] = first.customer if isinstance(first, Ticket.Opened) else None
        return self._customers[stream]


def read_feed(store: EventStore, after: int, limit: int, where: FeedFilter, scan: int = 5_000) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` matching events after position `after`, reading at most `scan`
    notifications; returns them and the position to continue after (stable: it is
    the last position read, matched or not)."""
    entries: list[dict[str, Any]] = []
    owners = TicketOwners(store)
    position = after
    while len(entries) < limit and position - after < scan:
        batch = store.recorder.select_notifications(position, min(500, scan), inclusive_of_start=False)
        if not batch:
            break
        for notification in batch:
            position = notification.id
            event = store.decode(notification)
            if where.admits(event, owners):
                entries.append(history_entry(event) | {"position": notification.id, "stream_id": event.originator_id})
                if len(entries) == limit:
                    break
    return entries, position


def version_at(events: Iterable[DomainEventProtocol[UUID]], instant: datetime) -> int | None:
    """The version a stream had at `instant`: its last event recorded at or before it."""
    version = None
    for event in events:
        if event.timestamp > instant:
            break
        version = event.originator_version
    return version


@dataclass(frozen=True)
class TimelineLine:
    at: datetime
    version: int
    type: str
    actor: dict[str, str] | None
    text: str


def timeline(events: Iterable[Ticket.Event], policy: Policy, zone: ZoneInfo) -> list[TimelineLine]:
    """One plain-words line per event, each reading the ticket as it stood after it."""
    lines = []
    ticket: Ticket | None = None
    for event in events:
        ticket = event.mutate(ticket)
        text = _describe(event, ticket, policy, zone)
        lines.append(TimelineLine(event.timestamp, event.originator_version, event_type(event), event.actor, text))
    return lines


def incident_report(ticket: Ticket, events: list[Ticket.Event], policy: Policy, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    """The cause-and-analysis report given to the customer after a major fault (seed 004)."""
    outcomes = [view(clock, policy, min(now, ticket.closed_at or now)) for clock in ticket.sla.clocks.values()]
    engineers = sorted({e.engineer for e in events if isinstance(e, Ticket.EngineerArrived)})
    resolved = [e for e in events if isinstance(e, Ticket.Resolved)]
    return {
        "ticket": {"id": str(ticket.id), "number": ticket.number, "customer": ticket.customer, "severity": str(ticket.severity),
                   "summary": ticket.summary, "status": str(ticket.status), "site": ticket.site, "device": ticket.device},
        "received_at": ticket.received_at.isoformat(),
        "resolved_at": ticket.resolved_at.isoformat() if ticket.resolved_at else None,
        "cause": resolved[-1].cause if resolved else None,
        "resolution": resolved[-1].resolution if resolved else None,
        "sla": {"committed": ticket.sla_plan is not None, "reason": ticket.no_commitment_reason,
                "escalation_level": ticket.escalation_level,
                "targets": [{"target": o.target, "state": str(o.state), "due_at": _iso(o.due_at), "met_at": _iso(o.met_at)}
                            for o in outcomes]},
        "engineers": engineers,
        "assigned": _assigned(events),
        "spare_units": _spare_units(events),
        "timeline": [{"at": line.at.isoformat(), "text": line.text} for line in timeline(events, policy, zone)],
    }


def _assigned(events: Iterable[Ticket.Event]) -> list[dict[str, str]]:
    """Every engineer dispatch put on the ticket, in order, with the role they last had."""
    roles: dict[str, dict[str, str]] = {}
    for event in events:
        if isinstance(event, Ticket.EngineerAssigned):
            roles[event.engineer] = {"engineer": event.engineer, "role": event.role, "level": event.level}
    return list(roles.values())


# What became of a spare unit, by the event that last concerned it on the ticket.
_UNIT_OUTCOMES = {
    Ticket.SpareUnitReserved: "reserved", Ticket.SpareUnitShipped: "shipped", Ticket.SpareUnitInstalled: "installed",
    Ticket.SpareUnitReturned: "returned", Ticket.SpareLoanConverted: "kept by the customer",
    Ticket.SpareReservationReleased: "released unused", Ticket.SpareReturnOverdue: "overdue",
}


def _spare_units(events: Iterable[Ticket.Event]) -> list[dict[str, Any]]:
    """The spare units lent for the ticket: which, from where, installed when, and how it ended."""
    units: dict[str, dict[str, Any]] = {}
    for event in events:
        if isinstance(event, Ticket.SpareUnitReserved):
            units[event.unit] = {"unit": event.unit, "model": event.model, "serial": event.serial,
                                 "warehouse": event.warehouse, "installed_at": None}
        if (unit := units.get(getattr(event, "unit", ""))) is not None and type(event) in _UNIT_OUTCOMES:
            unit["outcome"] = _UNIT_OUTCOMES[type(event)]
            if isinstance(event, Ticket.SpareUnitInstalled):
                unit["installed_at"] = event.timestamp.isoformat()
    return list(units.values())


def _assignment(entry: dict[str, str]) -> str:
    return f"{entry['engineer']} ({entry['role']}, {entry['level']})"


def _unit(entry: dict[str, Any]) -> str:
    return f"{entry['unit']} ({entry['model']}, {entry['serial']}) {entry['outcome']}"


def report_markdown(report: dict[str, Any], zone: ZoneInfo) -> str:
    t = report["ticket"]
    lines = [
        f"# Incident report {t['number']}",
        "",
        f"- Customer: {t['customer']}",
        f"- Severity: {t['severity']}; status: {t['status']}",
        f"- Summary: {t['summary']}",
        f"- Received: {_local(report['received_at'], zone)}; resolved: {_local(report['resolved_at'], zone) or '—'}",
        f"- Cause: {report['cause'] or '—'}",
        f"- Resolution: {report['resolution'] or '—'}",
        f"- Engineers on site: {', '.join(report['engineers']) or '—'}",
        f"- Engineers assigned: {', '.join(_assignment(a) for a in report['assigned']) or '—'}",
        f"- Spare units: {', '.join(_unit(u) for u in report['spare_units']) or '—'}",
        "",
        "## SLA outcome",
        "",
        "| target | outcome | due | met |",
        "|---|---|---|---|",
        *(f"| {TARGET_NAMES.get(x['target'], x['target'])} | {x['state']} | {_local(x['due_at'], zone) or '—'} | "
          f"{_local(x['met_at'], zone) or '—'} |" for x in report["sla"]["targets"]),
        "",
        f"Escalation level reached: {report['sla']['escalation_level']}."
        if report["sla"]["committed"] else f"No SLA commitment: {report['sla']['reason']}.",
        "",
        "## Timeline",
        "",
        *(f"- {_local(line['at'], zone)} {line['text']}" for line in report["timeline"]),
        "",
    ]
    return "\n".join(lines)


def _describe(event: Ticket.Event, ticket: Ticket, policy: Policy, zone: ZoneInfo) -> str:
    who = f"{event.actor.get('kind')} {event.actor.get('id')}" if event.actor else "someone"
    match event:
        case Ticket.Opened():
            return f"opened {ticket.number} ({ticket.severity} {ticket.category}) for {ticket.customer} via {ticket.channel}: {ticket.summary}"
        case Ticket.SlaCommitted():
            dues = [f"{TARGET_NAMES[c.target]} due {_clock(v.due_at, zone)}"
                    for c in ticket.sla.clocks.values() if (v := view(c, policy, event.timestamp)).due_at and c.running]
            return f"SLA {'committed' if event.reason == 'opened' else 'recomputed (' + event.reason + ')'}: " + ", ".join(dues)
        case Ticket.NoSlaCommitment():
            return f"no SLA commitment: {event.reason}"
        case Ticket.Acknowledged():
            return f"acknowledged by {who}: {event.plan}{_met(ticket, 'response', policy, event.timestamp)}"
        case Ticket.EngineerArrived():
            return f"engineer {event.engineer} on site{_met(ticket, 'on_site', policy, event.timestamp)}"
        case Ticket.Resolved():
            return f"resolved by {who}: {event.resolution}{_met(ticket, 'resolution', policy, event.timestamp)}"
        case Ticket.Confirmed():
            score = f" (satisfaction {event.satisfaction}/5)" if event.satisfaction else ""
            return f"confirmed by the customer{score}{_met(ticket, 'callback', policy, event.timestamp)}"
        case Ticket.SlaWarning():
            return f"warning: {TARGET_NAMES[event.target]} target due {_clock(event.due_at, zone)}"
        case Ticket.SlaBreached():
            return f"BREACHED: {TARGET_NAMES[event.target]} target was due {_clock(event.due_at, zone)}"
        case Ticket.Escalated():
            return f"escalated to {event.level} ({policy.escalation_levels.get(event.level, '')}) by {who}: {event.reason}"
        case Ticket.SeverityChanged():
            return f"severity {event.previous} → {event.severity} by {who}: {event.reason}"
    return f"{event_type(event).split('.', 1)[1].replace('_', ' ')} by {who}"


def _met(ticket: Ticket, target: str, policy: Policy, at: datetime) -> str:
    clock = ticket.sla.clocks.get(target)
    if clock is None or clock.met_at != at:
        return ""
    outcome = view(clock, policy, at)
    if outcome.due_at is None:
        return ""
    minutes = round(abs((outcome.due_at - at).total_seconds()) / 60)
    late = outcome.state is ClockState.BREACHED
    return f" — {TARGET_NAMES[target]} met {minutes} min {'late' if late else 'before due'}"


def _clock(instant: datetime | None, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M") if instant else "—"


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant else None


def _local(iso: str | None, zone: ZoneInfo) -> str | None:
    return _clock(datetime.fromisoformat(iso), zone) if iso else None
