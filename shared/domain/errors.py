"""Typed domain errors. The HTTP layer maps each to one RFC 9457 problem type."""
from __future__ import annotations


class DomainError(Exception):
    """Base of every rule violation a client can cause."""

    status = 409
    slug = "domain-error"
    title = "Domain rule violated"


class TicketNotFound(DomainError):
    status = 404
    slug = "ticket-not-found"
    title = "Ticket not found"

    def __init__(self, reference: str) -> None:
        super().__init__(f"no ticket {reference!r}")


class IllegalTransition(DomainError):
    slug = "illegal-transition"
    title = "Command not allowed in the ticket's current status"

    def __init__(self, command: str, status: str, detail: str | None = None) -> None:
        self.command = command
        self.ticket_status = status
        super().__init__(detail or f"cannot {command.replace('_', ' ')} a ticket that is {status}")


class AlreadyAcknowledged(IllegalTransition):
    slug = "already-acknowledged"
    title = "Ticket already acknowledged"


class SeverityUnchanged(IllegalTransition):
    slug = "severity-unchanged"
    title = "Severity already has that value"


class VersionConflict(DomainError):
    slug = "version-conflict"
    title = "Ticket changed since the version you expected"

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"expected version {expected}, ticket is at version {actual}")


class IdempotencyKeyReused(DomainError):
    """The same idempotency key (or source reference) came with a different body."""

    status = 422
    slug = "idempotency-key-reused"
    title = "Idempotency key already used for a different request"

    def __init__(self, field: str, ticket_number: str) -> None:
        self.field = field
        super().__init__(
            f"{field} was already used to open ticket {ticket_number} with a different body"
        )


class ContractNotFound(DomainError):
    status = 404
    slug = "contract-not-found"
    title = "Contract not found"

    def __init__(self, code: str) -> None:
        super().__init__(f"no contract {code!r}")


class InvalidContractTerms(DomainError):
    """A contract's code or terms break a rule; `field` names the offending term."""

    status = 422
    slug = "invalid-contract-terms"
    title = "Contract terms are not valid"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
