"""The contract book: the application service every writer of contracts goes through.

A put carries all of a contract's terms (PUT semantics). The first put of a code
registers the contract; later puts record only the terms that changed, and a put
that changes nothing records nothing, so loading the same contracts file again (at
every start, by every replica) leaves the store as it was.
"""
from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from uuid import uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from shared.clock import Clock
from shared.domain.contract import Contract, Terms, check_code, contract_id
from shared.domain.errors import ContractNotFound, InvalidContractTerms
from shared.domain.ticket import Actor
from shared.store import EventStore

_SAVE_ATTEMPTS = 20


class _Outcome(NamedTuple):
    contract: Contract
    created: bool
    recorded: bool


class ContractBook:
    def __init__(self, store: EventStore, clock: Clock, *, levels: Collection[str] | None = None) -> None:
        """`levels`: the SLA policy's service levels. A contract naming another level is
        refused, since no ticket on it could be given targets; None checks nothing."""
        self.store = store
        self.clock = clock
        self.levels = levels

    # -- reading ---------------------------------------------------------------

    def find(self, code: str) -> Contract | None:
        try:
            contract = self.store.repository.get(contract_id(code))
        except AggregateNotFoundError:
            return None
        return contract if isinstance(contract, Contract) else None

    def get(self, code: str) -> Contract:
        contract = self.find(code)
        if contract is None:
            raise ContractNotFound(code)
        return contract

    # -- writing ---------------------------------------------------------------

    def put(self, code: str, terms: Mapping[str, Any], *, actor: Actor, correlation_id: str) -> tuple[Contract, bool]:
        """Register or amend the contract `code`; returns it and whether it was created.
        A code or terms that break a rule raise InvalidContractTerms before anything is recorded."""
        outcome = self._put(code, self._terms(terms), actor=actor, correlation_id=correlation_id)
        return outcome.contract, outcome.created

    def load_file(self, path: Path, *, actor: Actor) -> int:
        """Put every contract of a TOML file (one table per contract code); returns how
        many events were recorded. The whole file is checked first, so a mistake
        anywhere in it records nothing."""
        with path.open("rb") as file:
            tables = tomllib.load(file)
        checked = [(code, self._file_entry(code, values, path)) for code, values in tables.items()]
        correlation_id = str(uuid4())  # one load, one correlation id across its events
        return sum(
            self._put(code, terms, actor=actor, correlation_id=correlation_id).recorded for code, terms in checked
        )

    def _terms(self, values: Mapping[str, Any]) -> Terms:
        terms = Terms.of(values)
        if self.levels is not None and terms.level not in self.levels:
            known = ", ".join(sorted(self.levels))
            raise InvalidContractTerms("level", f"{terms.level!r} is not a service level of the policy ({known})")
        return terms

    def _file_entry(self, code: str, values: Any, path: Path) -> Terms:
        try:
            check_code(code)
            if not isinstance(values, dict):
                raise InvalidContractTerms("terms", "expected a table of terms")
            return self._terms(values)
        except InvalidContractTerms as error:
            raise InvalidContractTerms(f"{code}.{error.field}", f"{error.reason} (in {path})") from None

    def _put(self, code: str, terms: Terms, *, actor: Actor, correlation_id: str) -> _Outcome:
        for _ in range(_SAVE_ATTEMPTS):
            contract = self.find(code)
            now = self.clock.now()
            if contract is None:
                contract = Contract.register(code, terms, at=now, actor=actor, correlation_id=correlation_id)
                created = True
            # A replica whose clock lags must not record an event before the one it follows.
            elif contract.amend(terms, at=max(now, contract.modified_on), actor=actor, correlation_id=correlation_id):
                created = False
            else:
                return _Outcome(contract, created=False, recorded=False)
            try:
                self.store.save(contract)
            except RecordConflictError:
                continue  # another writer saved first: compare the terms with its version
            return _Outcome(contract, created, recorded=True)
        raise RuntimeError(f"contract {code} kept changing; gave up after {_SAVE_ATTEMPTS} attempts")

