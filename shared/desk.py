"""The ticket desk: the application service every writer of tickets goes through.

Thin on purpose: load the ticket, call one aggregate method, save. It adds the three
things the aggregate cannot know: the clock, idempotent opening, and what to do when
another writer saved first.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from shared.clock import Clock
from shared.domain.errors import IdempotencyKeyReused, TicketNotFound, VersionConflict
from shared.domain.numbering import TicketNumberIssued, format_number, numbers_stream_id, parse_number
from shared.domain.ticket import Actor, Ticket
from shared.sla.commitments import Commitments
from shared.store import EventStore

_SAVE_ATTEMPTS = 20


@dataclass(frozen=True)
class IdempotencyToken:
    """What makes a retried open return the first ticket: a client's Idempotency-Key,
    or else the source system's own reference. `field` names it in errors."""

    scope: str
    value: str
    field: str

    @property
    def ticket_id(self) -> UUID:
        return uuid5(NAMESPACE_URL, f"urn:ticketing:open:{self.field}:{self.scope}:{self.value}")


@dataclass(frozen=True)
class Opened:
    ticket: Ticket
    replayed: bool


def request_digest(details: dict[str, Any]) -> str:
    canonical = json.dumps(details, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class TicketDesk:
    def __init__(
        self, store: EventStore, clock: Clock, zone: str = "Asia/Shanghai", commitments: Commitments | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.zone = ZoneInfo(zone)
        self.commitments = commitments
        self._numbering = threading.Lock()
        self._last_number: dict[int, int] = {}

    # -- reading ---------------------------------------------------------------

    def get(self, reference: str | UUID, *, version: int | None = None) -> Ticket:
        ticket_id = self._resolve(reference)
        try:
            ticket = self.store.repository.get(ticket_id, version=version)
        except AggregateNotFoundError:
            raise TicketNotFound(str(reference)) from None
        if not isinstance(ticket, Ticket):
            raise TicketNotFound(str(reference))
        return ticket

    def history(self, reference: str | UUID) -> list[Ticket.Event]:
        ticket = self.get(reference)
        return list(self.store.events.get(ticket.id))

    def _resolve(self, reference: str | UUID) -> UUID:
        if isinstance(reference, UUID):
            return reference
        parsed = parse_number(reference)
        if parsed is not None:
            year, sequence = parsed
            stored = self.store.recorder.select_events(numbers_stream_id(year), gt=sequence - 1, lte=sequence)
            if not stored:
                raise TicketNotFound(reference)
            issued = self.store.decode(stored[0])
            return issued.ticket_id
        try:
            return UUID(reference)
        except ValueError:
            raise TicketNotFound(reference) from None

    # -- opening -----------------------------------------------------------------

    def open(
        self,
        *,
        details: dict[str, Any],
        token: IdempotencyToken | None,
        actor: Actor,
        correlation_id: str,
    ) -> Opened:
        digest = request_digest(details)
        ticket_id = token.ticket_id if token else uuid4()
        if token and ticket_id in self.store.repository:
            return self._replay(ticket_id, digest, token)
        for _ in range(_SAVE_ATTEMPTS):
            with self._numbering:
                at = self.clock.now()
                year = at.astimezone(self.zone).year
                sequence = self._next_number(year)
                number = format_number(year, sequence)
                ticket = Ticket.open(
                    id=ticket_id, at=at, actor=actor, correlation_id=correlation_id,
                    number=number, request_digest=digest, **details,
                )
                if self.commitments:
                    self.commitments.on_open(ticket, at=at, correlation_id=correlation_id)
                issued = TicketNumberIssued(
                    originator_id=numbers_stream_id(year), originator_version=sequence,
                    timestamp=at, ticket_id=ticket_id, number=number,
                )
                try:
                    self.store.save(ticket, issued)
                except RecordConflictError:
                    # Another writer took this number, or opened this very ticket.
                    self._last_number.pop(year, None)
                else:
                    self._last_number[year] = sequence
                    return Opened(ticket, replayed=False)
            if token and ticket_id in self.store.repository:
                return self._replay(ticket_id, digest, token)
        raise RuntimeError(f"could not allocate a ticket number after {_SAVE_ATTEMPTS} attempts")

    def _next_number(self, year: int) -> int:
        if year not in self._last_number:
            last = self.store.recorder.select_events(numbers_stream_id(year), desc=True, limit=1)
            self._last_number[year] = last[0].originator_version if last else 0
        return self._last_number[year] + 1

    def _replay(self, ticket_id: UUID, digest: str, token: IdempotencyToken) -> Opened:
        """The ticket as the first request left it: its Opened event and the SLA
        commitment saved with it, whatever happened to the ticket since."""
        first_two = list(self.store.events.get(ticket_id, lte=2))
        opening = first_two[:1] + [e for e in first_two[1:] if _part_of_opening(e)]
        first = self.get(ticket_id, version=len(opening))
        if first.request_digest != digest:
            raise IdempotencyKeyReused(token.field, first.number)
        return Opened(first, replayed=True)

    # -- commands ----------------------------------------------------------------

    def act(
        self,
        reference: str | UUID,
        command: str,
        *,
        expected_version: int | None,
        actor: Actor,
        correlation_id: str,
        allowed: Callable[[Ticket], bool] = lambda _: True,
        **arguments: Any,
    ) -> Ticket:
        """Run one ticket command. With `expected_version` a concurrent change is the
        caller's conflict (409); without it the command is retried on the new state.
        A ticket the caller is not `allowed` to see is not found, judged on the very
        state the command runs on."""
        for _ in range(_SAVE_ATTEMPTS):
            ticket = self.get(reference)
            if not allowed(ticket):
                raise TicketNotFound(str(reference))
            if expected_version is not None and ticket.version != expected_version:
                raise VersionConflict(expected_version, ticket.version)
            at = self._at(ticket)
            getattr(ticket, command)(at=at, actor=actor, correlation_id=correlation_id, **arguments)
            if command == "change_severity" and self.commitments:
                self.commitments.on_severity_change(ticket, at=at, correlation_id=correlation_id)
            try:
                self.store.save(ticket)
            except RecordConflictError:
                continue
            return ticket
        raise RuntimeError(f"ticket {reference} kept changing; gave up after {_SAVE_ATTEMPTS} attempts")

    def _at(self, ticket: Ticket) -> datetime:
        # A replica whose clock lags must not record an event before the one it follows.
        return max(self.clock.now(), ticket.modified_on)


def _part_of_opening(event: Ticket.Event) -> bool:
    return isinstance(event, Ticket.NoSlaCommitment) or (isinstance(event, Ticket.SlaCommitted) and event.reason == "opened")
