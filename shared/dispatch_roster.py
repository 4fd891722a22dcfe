"""The roster and the stock: the application services every writer of engineers and
spare units goes through (the dispatch API and the files loaded at start).

A put carries all of an entry's attributes (PUT semantics). The first put of an id
registers it; later puts record only what changed, and a put that changes nothing
records nothing, so loading the same file again (at every start, by every
replica) leaves the store as it was. A unit's state (reserved, on loan...) is
never set by a put: it moves only through the dispatch commands.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from shared.clock import Clock
from shared.dispatch_config import read_toml
from shared.dispatching import DispatchRules
from shared.domain.chain import Chained
from shared.domain.engineer import Engineer, Profile, check_code, engineer_id
from shared.domain.errors import DomainError, EngineerNotFound, InvalidRosterEntry, SpareUnitNotFound
from shared.domain.spare_unit import Record, SpareUnit, spare_unit_id
from shared.domain.ticket import Actor
from shared.store import EventStore

_SAVE_ATTEMPTS = 20

A = TypeVar("A", bound=Chained)
V = TypeVar("V")


class Outcome(NamedTuple, Generic[A]):
    aggregate: A
    created: bool
    recorded: bool


class _Book(Generic[A, V]):
    """Register-or-amend by id for one kind of aggregate."""

    kind: type[A]
    table: str  # the file's table of entries
    not_found: Callable[[str], DomainError]

    def __init__(self, store: EventStore, clock: Clock, rules: DispatchRules) -> None:
        self.store = store
        self.clock = clock
        self.rules = rules

    def stream_id(self, code: str) -> UUID:
        raise NotImplementedError

    def parse(self, values: Mapping[str, Any]) -> V:
        raise NotImplementedError

    def find(self, code: str) -> A | None:
        try:
            found = self.store.repository.get(self.stream_id(code))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, self.kind) else None

    def get(self, code: str) -> A:
        found = self.find(code)
        if found is None:
            raise type(self).not_found(code)
        return found

    def put(self, code: str, values: Mapping[str, Any], *, actor: Actor, correlation_id: str) -> Outcome[A]:
        """Register or amend `code`; refused (InvalidRosterEntry) before anything is recorded."""
        check_code(code)
        return self._put(code, self.parse(values), actor=actor, correlation_id=correlation_id)

    def load_file(self, path: Path, *, actor: Actor) -> int:
        """Put every entry of the file's table; returns how many events were recorded.
        The whole table is checked first, so a mistake anywhere records nothing."""
        entries = read_toml(path).get(self.table, {})
        checked = [(code, self._entry(code, values, path)) for code, values in entries.items()]
        correlation_id = str(uuid4())  # one load, one correlation id across its events
        return sum(self._put(code, value, actor=actor, correlation_id=correlation_id).recorded for code, value in checked)

    def _entry(self, code: str, values: Any, path: Path) -> V:
        try:
            check_code(code)
            if not isinstance(values, dict):
                raise InvalidRosterEntry("attributes", "expected a table")
            return self.parse(values)
        except InvalidRosterEntry as error:
            raise InvalidRosterEntry(f"{self.table}.{code}.{error.field}", f"{error.reason} (in {path})") from None

    def _put(self, code: str, value: V, *, actor: Actor, correlation_id: str) -> Outcome[A]:
        for _ in range(_SAVE_ATTEMPTS):
            found = self.find(code)
            now = self.clock.now()
            if found is None:
                aggregate, created = self.kind.register(code, value, at=now, actor=actor, correlation_id=correlation_id), True
            # A replica whose clock lags must not record an event before the one it follows.
            elif found.amend(value, at=max(now, found.modified_on), actor=actor, correlation_id=correlation_id):
                aggregate, created = found, False
            else:
                return Outcome(found, created=False, recorded=False)
            try:
                self.store.save(aggregate)
            except RecordConflictError:
                continue  # another writer saved first: compare with its version
            return Outcome(aggregate, created, recorded=True)
        raise RuntimeError(f"{code} kept changing; gave up after {_SAVE_ATTEMPTS} attempts")


class EngineerRoster(_Book[Engineer, Profile]):
    kind = Engineer
    table = "engineers"
    not_found = EngineerNotFound

    def stream_id(self, code: str) -> UUID:
        return engineer_id(code)

    def parse(self, values: Mapping[str, Any]) -> Profile:
        return Profile.of(values, branches=self.rules.cities, calendars=self.rules.calendars, skills=self.rules.skills)


class SpareStock(_Book[SpareUnit, Record]):
    kind = SpareUnit
    table = "units"
    not_found = SpareUnitNotFound

    def stream_id(self, code: str) -> UUID:
        return spare_unit_id(code)

    def parse(self, values: Mapping[str, Any]) -> Record:
        return Record.of(values, warehouses=self.rules.warehouses)
