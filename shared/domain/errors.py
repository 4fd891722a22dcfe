"""Typed domain errors. The HTTP layer maps each to one RFC 9457 problem type."""
from __future__ import annotations


class DomainError(Exception):
    """Base of every rule violation a client can cause."""

    status = 409
    slug = "domain-error"
    title = "Domain rule violated"

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the problem body."""
        return {}


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


class InvalidField(DomainError):
    """A value breaks a rule; `field` names it, so the problem body points at it."""

    status = 422

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class ContractNotFound(DomainError):
    status = 404
    slug = "contract-not-found"
    title = "Contract not found"

    def __init__(self, code: str) -> None:
        super().__init__(f"no contract {code!r}")


class InvalidContractTerms(InvalidField):
    """A contract's code or terms break a rule; `field` names the offending term."""

    slug = "invalid-contract-terms"
    title = "Contract terms are not valid"



# -- dispatch: engineers and spare units ----------------------------------------------


class EngineerNotFound(DomainError):
    status = 404
    slug = "engineer-not-found"
    title = "Engineer not found"

    def __init__(self, code: str) -> None:
        super().__init__(f"no engineer {code!r}")


class SpareUnitNotFound(DomainError):
    status = 404
    slug = "spare-unit-not-found"
    title = "Spare unit not found"

    def __init__(self, code: str) -> None:
        super().__init__(f"no spare unit {code!r}")


class InvalidRosterEntry(InvalidField):
    """An engineer's profile or a spare unit's record breaks a rule; `field` names it."""

    slug = "invalid-roster-entry"
    title = "Engineer or spare unit data is not valid"



class EngineerUnavailable(DomainError):
    """The engineer cannot take the ticket: inactive or carrying as many as they may."""

    slug = "engineer-unavailable"
    title = "Engineer cannot take the ticket"


class NotOnTicket(IllegalTransition):
    slug = "not-on-ticket"
    title = "Engineer or spare unit is not on this ticket"


class IllegalUnitTransition(DomainError):
    slug = "illegal-unit-transition"
    title = "Command not allowed in the spare unit's current state"

    def __init__(self, command: str, state: str, detail: str | None = None) -> None:
        self.command = command
        self.unit_state = state
        super().__init__(detail or f"cannot {command.replace('_', ' ')} a spare unit that is {state}")


class LoanOutstanding(IllegalTransition):
    """A loaned spare unit is still at the customer: return it or convert the loan first."""

    slug = "loan-outstanding"
    title = "A loaned spare unit is still at the customer"


class SpareNotAllowed(IllegalTransition):
    slug = "spare-not-allowed"
    title = "Spare units are lent only for some faults"


# -- webhook subscriptions ----------------------------------------------------------


class WebhookNotFound(DomainError):
    status = 404
    slug = "webhook-not-found"
    title = "Webhook subscription not found"

    def __init__(self, reference: str) -> None:
        super().__init__(f"no webhook subscription {reference!r}")


class InvalidWebhook(InvalidField):
    """A subscription's URL, event types, filters or description break a rule; `field` names it."""

    slug = "invalid-webhook"
    title = "Webhook subscription is not valid"



class WebhookDestinationRefused(InvalidWebhook):
    """The URL resolves to a loopback, private, link-local or metadata address (the SSRF guard)."""

    slug = "webhook-destination-refused"
    title = "Webhook URL points at an address the service may not call"


class WebhookStateConflict(DomainError):
    slug = "webhook-state-conflict"
    title = "Not allowed in the webhook subscription's current status"


class WebhookVersionConflict(DomainError):
    slug = "webhook-version-conflict"
    title = "Webhook subscription changed since the version you expected"

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"expected version {expected}, the subscription is at version {actual}")


class DeliveryNotFound(DomainError):
    status = 404
    slug = "delivery-not-found"
    title = "No such delivery in the subscription's log"

    def __init__(self, webhook_id: str, event_id: str) -> None:
        super().__init__(f"event {event_id} was never delivered to webhook subscription {webhook_id}")


# -- access: API keys -------------------------------------------------------------------


class InvalidKey(InvalidField):
    slug = "invalid-key"
    title = "API key terms are not valid"


class KeyNotFound(DomainError):
    status = 404
    slug = "key-not-found"
    title = "API key not found"

    def __init__(self, key: str) -> None:
        super().__init__(f"no API key {key!r}")


class Unauthenticated(DomainError):
    """No key, or one that is unknown or revoked: the same answer, so nothing leaks."""

    status = 401
    slug = "unauthenticated"
    title = "A valid API key is required"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="ticketing"'}


class Forbidden(DomainError):
    """The key's role may not do this at all (a ticket outside its scope is a 404 instead)."""

    status = 403
    slug = "forbidden"
    title = "The key's role does not allow this"


class RateLimited(DomainError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests for this key"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"the key's request rate is used up; retry in {retry_after} s")

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
