"""The ticket desk: the application service every writer of tickets goes through.

Thin on purpose: load the ticket, call one aggregate method, save. It adds the three
things the aggregate cannot know: the clock, idempotent opening, and what to do when
another writer saved first.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from shared.clock import Clock
from shared.combining import Combiner
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


@dataclass
class _Request:
    """An open waiting to be saved with the others that came at the same time."""

    ticket_id: UUID
    details: dict[str, Any]
    digest: str
    token: IdempotencyToken | None
    actor: Actor
    correlation_id: str
    outcome: Opened | BaseException | None = None

    @classmethod
    def of(cls, details: dict[str, Any], token: IdempotencyToken | None, actor: Actor, correlation_id: str) -> _Request:
        return cls(token.ticket_id if token else uuid4(), details, request_digest(details), token, actor, correlation_id)

    def answer(self) -> Opened:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


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
        self._last_number: dict[int, int] = {}
        self._opens: Combiner[_Request] = Combiner(self._open_together)

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
        """Open a ticket, or return the one a first attempt with the same token opened.

        Numbers are dense, so opening is serial per process; to keep a storm of reports
        from queueing behind one commit each, concurrent opens are numbered and saved
        together, in one transaction (see shared/combining.py).
        """
        request = _Request.of(details, token, actor, correlation_id)
        self._opens.submit(request)
        return request.answer()

    async def open_async(
        self,
        *,
        details: dict[str, Any],
        token: IdempotencyToken | None,
        actor: Actor,
        correlation_id: str,
    ) -> Opened:
        """`open`, for a coroutine: no thread is held while its batch is saved."""
        request = _Request.of(details, token, actor, correlation_id)
        await self._opens.submit_async(request)
        return request.answer()

    def _open_together(self, batch: list[_Request]) -> None:
        """Number and save `batch` in one transaction; each request gets its outcome.

        A conflict means another writer took one of the numbers, or one of these very
        tickets is recorded already (a retry, whose ticket id its token gives): look
        again, answer the retries with their tickets, and save the rest. Retries are
        rare, so nobody looks before the first save. A request that cannot be opened
        (its details refused) fails alone."""
        waiting = batch
        conflicted = False
        # A storm of reports from one site names one contract: work out its terms once per batch.
        commitments = self.commitments.for_one_batch() if self.commitments else None
        for _ in range(_SAVE_ATTEMPTS):
            if conflicted:
                waiting = self._not_opened_yet(waiting)
            if not waiting:
                return
            at = self.clock.now()
            year = at.astimezone(self.zone).year
            sequence = self._next_number(year) - 1
            now, later, saving, taken = [], [], [], set()
            for request in waiting:
                if request.ticket_id in taken:
                    later.append(request)  # the same token twice: a replay of the first, once saved
                    continue
                try:
                    ticket = self._new_ticket(request, at, format_number(year, sequence + 1), commitments)
                except Exception as error:  # noqa: BLE001 - this request's own error, answered to it
                    request.outcome = error
                    continue
                sequence += 1
                now.append(request)
                taken.add(request.ticket_id)
                saving += [ticket, TicketNumberIssued(
                    originator_id=numbers_stream_id(year), originator_version=sequence,
                    timestamp=at, ticket_id=ticket.id, number=ticket.number,
                )]
            try:
                if saving:
                    self.store.save(*saving)
            except RecordConflictError:
                self._last_number.pop(year, None)
                conflicted = True
                continue
            except Exception as error:  # noqa: BLE001 - the store failed: every request in it hears why
                for request in now:
                    request.outcome = error
                return
            self._last_number[year] = sequence
            for request, ticket in zip(now, saving[::2]):
                request.outcome = Opened(ticket, replayed=False)
            waiting, conflicted = later, bool(later)
        for request in waiting:
            request.outcome = RuntimeError(f"could not allocate a ticket number after {_SAVE_ATTEMPTS} attempts")

    @staticmethod
    def _new_ticket(request: _Request, at: datetime, number: str, commitments: Commitments | None) -> Ticket:
        ticket = Ticket.open(
            id=request.ticket_id, at=at, actor=request.actor, correlation_id=request.correlation_id,
            number=number, request_digest=request.digest, **request.details,
        )
        if commitments:
            commitments.on_open(ticket, at=at, correlation_id=request.correlation_id)
        return ticket

    def _not_opened_yet(self, requests: list[_Request]) -> list[_Request]:
        """The requests whose ticket is not recorded; the others are answered with it,
        all looked up in one query."""
        recorded = self.store.last_versions([r.ticket_id for r in requests if r.token])
        rest = []
        for request in requests:
            if not recorded.get(request.ticket_id):
                rest.append(request)
                continue
            assert request.token is not None
            try:
                request.outcome = self._replay(request.ticket_id, request.digest, request.token)
            except Exception as error:  # noqa: BLE001 - this request's own answer (a reused key, a failed read)
                request.outcome = error
        return rest

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
