"""Automatic dispatch: what becomes of a ticket's engineers when something happens to it.

Each reaction reads the ticket as it is now, not the event that woke it:

- staffing (opened, reopened, declined, handed back, complaint, escalated): an
  active ticket has a lead, and the engineers of its escalation rung;
- releasing (resolved, cancelled): the engineers' capacity and the spare units
  not yet shipped go back.

So a redelivered or reordered message finds nothing left to do. Every staffing
record also names the ticket version it reacted to (`cause`), and a message about
a version already reacted to is ignored outright.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from shared.clock import Clock
from shared.dispatch_roster import EngineerRoster
from shared.dispatch_spares import SpareLogistics
from shared.dispatch_store import DISPATCH_ACTOR, SAVE_ATTEMPTS, ReadModels, Workspace, instant
from shared.dispatching import (
    Candidate, DispatchRules, Match, Need, Ranking, branches_serving, highest, is_complaint, rank, region_of,
    required_skill, service_instant,
)
from shared.domain.engineer import Engineer
from shared.domain.errors import EngineerUnavailable, TicketNotFound
from shared.domain.ticket import ALLOWED_FROM, ESCALATION_LEVELS, Ticket
from shared.store import EventStore

STAFFING = frozenset({
    "ticket.opened", "ticket.reopened", "ticket.assignment_declined", "ticket.engineer_handed_back",
    "ticket.engineer_complaint", "ticket.escalated",
})
RELEASING = frozenset({"ticket.resolved", "ticket.cancelled"})
STAFFABLE = ALLOWED_FROM["assign_engineer"]


class Reaction(NamedTuple):
    """A recorded ticket event dispatch reacts to."""

    ticket_id: UUID
    version: int
    event_type: str
    correlation_id: str


class Dispatcher:
    def __init__(
        self, store: EventStore, clock: Clock, rules: DispatchRules, reads: ReadModels,
        roster: EngineerRoster, spares: SpareLogistics,
    ) -> None:
        self.store = store
        self.clock = clock
        self.rules = rules
        self.reads = reads
        self.roster = roster
        self.spares = spares

    def react(self, ticket_id: UUID, version: int, event_type: str, correlation_id: str) -> str:
        """React to one recorded ticket event; returns what was done, in words (for the log)."""
        outcome = self.react_many([Reaction(ticket_id, version, event_type, correlation_id)])[ticket_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def react_many(self, reactions: Sequence[Reaction]) -> dict[UUID, str | Exception]:
        """React to one event of each of many tickets: one catch-up of the read models, one
        read of the tickets, one save. The decisions share what they change (a
        Workspace), so they come out as if taken one after the other (none races
        another of the batch for the same least-loaded engineer). On a conflict with
        another writer the batch is decided again from fresh reads; a decision that
        fails is answered with its error, and the others are decided again without it."""
        if len({r.ticket_id for r in reactions}) < len(reactions):
            raise ValueError("at most one reaction per ticket in a batch")
        outcomes: dict[UUID, str | Exception] = {
            r.ticket_id: "nothing to do" for r in reactions if r.event_type not in STAFFING | RELEASING}
        waiting = [r for r in reactions if r.ticket_id not in outcomes]
        for _ in range(SAVE_ATTEMPTS):
            if not waiting:
                break
            decided = self._decide(waiting)
            if isinstance(decided, _Failed):
                outcomes[decided.ticket_id] = decided.error
                waiting = [r for r in waiting if r.ticket_id != decided.ticket_id]
                continue
            done, workspace = decided
            try:
                if changed := [a for a in workspace.held.values() if a.pending_events]:
                    self.store.save(*changed)
            except RecordConflictError:
                continue
            return outcomes | done
        gave_up = RuntimeError(f"not decided after {SAVE_ATTEMPTS} attempts (conflicts, or others' failures)")
        return outcomes | {r.ticket_id: gave_up for r in waiting}

    def _decide(self, reactions: Sequence[Reaction]) -> tuple[dict[UUID, str | Exception], Workspace] | _Failed:
        self.reads.refresh(units=False)  # one that lends a unit looks at the unit list then
        tickets = self.store.get_many([r.ticket_id for r in reactions])
        workspace = Workspace(self.reads.known)
        done: dict[UUID, str | Exception] = {}
        for r in reactions:
            ticket = tickets.get(r.ticket_id)
            if not isinstance(ticket, Ticket):
                done[r.ticket_id] = TicketNotFound(str(r.ticket_id))
                continue
            workspace.hold(ticket)
            try:
                if r.event_type in STAFFING:
                    done[r.ticket_id] = _Staffing(self, ticket, r.correlation_id, workspace).run(r.version, r.event_type)
                else:
                    done[r.ticket_id] = self._release(ticket, r.correlation_id, workspace)
            except Exception as error:  # noqa: BLE001 - its changes are in the workspace: decide the rest afresh
                return _Failed(r.ticket_id, error)
        return done, workspace

    def _release(self, ticket: Ticket, correlation_id: str, workspace: Workspace) -> str:
        if ticket.status in STAFFABLE:
            return "ticket is active again"  # reopened meanwhile: its engineers stay
        reason = f"ticket {ticket.number} {ticket.status}"
        freed = []
        for code in ticket.engineers:
            engineer = workspace.get(self.roster, code)
            at = instant(self.clock, engineer)
            if engineer.release(ticket_id=ticket.id, reason=reason, at=at, actor=DISPATCH_ACTOR, correlation_id=correlation_id):
                freed.append(engineer)
        units = self.spares.release_unshipped(ticket, reason, correlation_id=correlation_id, within=workspace)
        return f"freed {', '.join(e.code for e in freed) or 'nobody'}; released units {', '.join(u.code for u in units) or 'none'}"


class _Failed(NamedTuple):
    ticket_id: UUID
    error: Exception


class _Staffing:
    """One staffing decision on a freshly read ticket: records on the ticket and the
    engineers' streams, whose aggregates it finds in (and leaves to) the workspace."""

    def __init__(self, dispatcher: Dispatcher, ticket: Ticket, correlation_id: str, workspace: Workspace) -> None:
        self.d = dispatcher
        self.rules = dispatcher.rules
        self.ticket = ticket
        self.correlation_id = correlation_id
        self.workspace = workspace
        self.done: list[str] = []
        self.resumes: datetime | None = None  # when service hours resume, if not now

    def run(self, version: int, event_type: str) -> str:
        ticket = self.ticket
        if version <= ticket.dispatch_cause:
            return f"version {version} already applied"
        if ticket.status not in STAFFABLE:
            return f"ticket is {ticket.status}"
        self.cause = version
        trigger = self._event(version) if event_type == "ticket.escalated" else None
        if trigger is not None and trigger.trigger == "manual" and is_complaint(self.rules, trigger.reason):
            self._complaint(trigger.reason)
        if event_type == "ticket.reopened":
            self._take_back()
        rung = self.rules.ladder.get(ticket.escalation_level)
        unstaffed = rung if rung and _above(ticket.escalation_level, ticket.staffed_level) else None
        if ticket.lead_engineer is None:
            # A lead chosen while the rung is unstaffed staffs it too (a complaint's
            # replacement, a ticket escalated before anyone took it); a panel is extra.
            folded = unstaffed if unstaffed and unstaffed.role != "panel" else None
            level = highest(self._floor(), *([folded.level] if folded else []))
            for_level = ticket.escalation_level if folded else "L1"
            found = self._assign(level, role="lead", for_level=for_level, count=1, rung=False)
            # No lead, no rung either: the escalation that follows retries both.
            unstaffed = None if folded or not found else unstaffed
        if unstaffed is not None:
            self._assign(highest(unstaffed.level, ticket.engineer_floor), role=unstaffed.role,
                         for_level=ticket.escalation_level, count=unstaffed.engineers, rung=True)
        if trigger is not None and trigger.trigger == "breach:resolution":
            self._spare_for_breach()
        return "; ".join(self.done) or "nothing to do"

    def _event(self, version: int) -> Ticket.Escalated | None:
        last = self.ticket.last_escalated
        if last is not None and last.originator_version == version:
            return last
        # An earlier escalation (another came since): read it.
        event = next(iter(self.d.store.events.get(self.ticket.id, gt=version - 1, lte=version)), None)
        return event if isinstance(event, Ticket.Escalated) else None

    def _floor(self) -> str:
        return highest(self.rules.min_level[str(self.ticket.severity)], self.ticket.engineer_floor)

    # -- steps -------------------------------------------------------------------------

    def _complaint(self, reason: str) -> None:
        """A manual escalation that complains about the engineer: the lead leaves the ticket."""
        lead = next((a for a in self.ticket.assignments if a.role == "lead"), None)
        if lead is None:
            return
        engineer = self._engineer(lead.engineer)
        at = self._at(engineer)
        self.ticket.complain_about_engineer(engineer=lead.engineer, level=lead.level, reason=reason, at=at,
                                            actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
        engineer.release(ticket_id=self.ticket.id, reason=f"complaint: {reason}", at=at, actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
        self.done.append(f"complaint: {lead.engineer} taken off")

    def _take_back(self) -> None:
        """Reopened: the engineers carry the ticket again, or hand it back if they cannot."""
        for code in self.ticket.engineers:
            engineer = self._engineer(code)
            at = self._at(engineer)
            try:
                engineer.take(ticket_id=self.ticket.id, number=self.ticket.number, role="reopened", reason="ticket reopened",
                              at=at, actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
            except EngineerUnavailable as why:
                self.ticket.hand_back(engineer=code, reason=f"reopened, but {why}", at=at, actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
                self.done.append(f"{code} handed back ({why})")

    def _assign(self, min_level: str, *, role: str, for_level: str, count: int, rung: bool) -> bool:
        """Put up to `count` engineers on the ticket, best first; record why if nobody fits.
        `rung`: they staff an escalation rung (the ticket has a lead already)."""
        need = self._need(min_level)
        branches, also = branches_serving(self.rules, need.city, need.region), [need.preferred] if need.preferred else []
        listed = self.workspace.listed(("candidates", branches, *also),
                                       lambda: self.d.reads.engineers.candidates(branches, also=also))
        ranking = rank(self.rules, self._as_held(listed), need)
        taken = 0
        for match in ranking.matches:
            if taken == count:
                break
            taken += self._take(match, ranking, need, role=role, for_level=for_level, seat=f" {taken + 1} of {count}" if count > 1 else "")
        if not taken:
            self._nobody(ranking, role=role, for_level=for_level, rung=rung)
        return taken > 0

    def _take(self, match: Match, ranking: Ranking, need: Need, *, role: str, for_level: str, seat: str) -> bool:
        c = match.candidate
        engineer = self._engineer(c.id)
        at = self._at(engineer)
        reason = f"{role}{seat}: {c.id} {c.name} — " + "; ".join(match.rules)
        if need.preferred and need.preferred != c.id:
            reason += f"; dedicated engineer {need.preferred} {ranking.preferred_rejected or 'not registered'}, so the rota"
        if self.resumes is not None:
            local = self.resumes.astimezone(self.rules.zone).strftime("%Y-%m-%d %H:%M")
            reason += f"; outside the contract's service hours: on duty when they resume at {local}"
        try:
            engineer.take(ticket_id=self.ticket.id, number=self.ticket.number, role=role, reason=reason, at=at,
                          actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
        except EngineerUnavailable:
            return False  # the list trailed the stream: full or inactive by now; the next one
        self.ticket.assign_engineer(engineer=c.id, level=c.level, role=role, for_level=for_level, rules=list(match.rules),
                                    reason=reason, cause=self.cause, at=at, actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
        self.done.append(f"{c.id} assigned as {role}")
        return True

    def _nobody(self, ranking: Ranking, *, role: str, for_level: str, rung: bool) -> None:
        """Never silently unassigned: record why nobody fits, and escalate a ticket left without a lead."""
        ticket = self.ticket
        at = self._at()
        level = self.rules.unassigned_escalates_to
        escalate = not rung and _above(level, ticket.escalation_level)
        if escalate:
            next_step = f"escalated to {level}: the duty lead finds someone"
        elif rung:
            next_step = f"the escalation to {ticket.escalation_level} stands without an added engineer; dispatch tries again on the next change"
        else:
            next_step = f"already at {ticket.escalation_level}: dispatch tries again on the next decline, escalation or reopen"
        why = ranking.why_nobody()
        ticket.record_no_engineer(role=role, for_level=for_level, reason=why, rejected=dict(ranking.rejected), next_step=next_step,
                                  cause=self.cause, at=at, actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
        if escalate:
            ticket.escalate(level=level, reason=why, trigger="dispatch:no_engineer", at=at, actor=DISPATCH_ACTOR, correlation_id=self.correlation_id)
        self.done.append(f"no {role}: {why}")

    def _spare_for_breach(self) -> None:
        """The resolution target breached on a P1/P2 fault: lend a unit of the device's model."""
        ticket = self.ticket
        model = ticket.device.get("model")
        if ticket.spare_units or not model or str(ticket.severity) not in self.rules.spare_severities:
            return
        self.d.reads.refresh()  # the unit list too (Dispatcher._decide caught up the engineers' only)
        if not self.d.reads.units.stocks_model(model):
            return
        # The ticket and the unit it changes are the workspace's already, saved with the batch.
        outcome, _ = self.d.spares.reserve_into(ticket, model, "resolution target breached", cause=self.cause,
                                                actor=DISPATCH_ACTOR, correlation_id=self.correlation_id,
                                                within=self.workspace)
        self.done.append(outcome.detail)

    # -- helpers -----------------------------------------------------------------------

    def _need(self, min_level: str) -> Need:
        ticket = self.ticket
        terms = ticket.entitlement
        city = ticket.site.get("city")
        now = self.d.clock.now()
        at, _ = service_instant(self.rules, terms.get("level") if terms.get("committed") else None, now)
        self.resumes = at if at > now else None
        return Need(
            city=city,
            region=region_of(self.rules, ticket.site.get("region")) or region_of(self.rules, city) or region_of(self.rules, terms.get("region")),
            skill=required_skill(self.rules, ticket.device),
            min_level=min_level,
            at=at,
            preferred=terms.get("dedicated_engineer"),
            excluded=ticket.excluded_engineers | set(ticket.engineers),
        )

    def _engineer(self, code: str) -> Engineer:
        return self.workspace.get(self.d.roster, code)

    def _as_held(self, listed: list[Candidate]) -> list[Candidate]:
        """The listed engineers, with the load of those this batch has changed already as
        it stands now (the list has not seen those changes yet)."""
        held = {a.code: a for a in self.workspace.held.values() if isinstance(a, Engineer)}
        return [c if c.id not in held else replace(c, load=held[c.id].load, active=held[c.id].profile.active,
                                                   max_tickets=held[c.id].profile.max_tickets)
                for c in listed]

    def _at(self, *others: Any) -> datetime:
        return instant(self.d.clock, self.ticket, *others)


def _above(level: str, other: str) -> bool:
    return ESCALATION_LEVELS.index(level) > ESCALATION_LEVELS.index(other)
