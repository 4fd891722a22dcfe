"""How a recorded event looks outside the store: in the history API, the audit feed,
and on NATS as a CloudEvents 1.0 structured JSON message."""
from __future__ import annotations

import re
from functools import cache
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import resolve_topic
from pydantic_core import to_jsonable_python

from shared.store import event_id

_ENVELOPE = {
    "originator_id", "originator_version", "timestamp", "originator_topic", "actor", "correlation_id",
    "previous_hash", "content_hash",
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def is_internal(event: DomainEventProtocol[UUID]) -> bool:
    return getattr(event, "internal", False)


@cache
def is_internal_topic(topic: str) -> bool:
    """Whether events stored under `topic` are internal: known before decoding one."""
    return getattr(resolve_topic(topic), "internal", False)


def event_type(event: DomainEventProtocol[UUID]) -> str:
    """`Ticket.CustomerResponded` → `ticket.customer_responded`. A class may set `cloud_type`."""
    return _type_name(type(event))


@cache  # a name per event class, asked for several times per event relayed
def _type_name(kind: type) -> str:
    explicit = getattr(kind, "cloud_type", None)
    if explicit:
        return explicit
    aggregate, _, name = kind.__qualname__.rpartition(".")
    return f"{aggregate.lower()}.{_CAMEL.sub('_', name).lower()}"


def subject(event: DomainEventProtocol[UUID]) -> str:
    return f"events.{event_type(event)}"


def subjects_of(base: type) -> set[str]:
    """The subject of every event class derived from `base` that has no subclass of
    its own: a class that has one (Ticket.Staffing, say) groups events, and is never
    recorded itself."""
    kinds = base.__subclasses__()
    if not kinds:
        return {f"events.{_type_name(base)}"}
    return set().union(*map(subjects_of, kinds))


def event_data(event: DomainEventProtocol[UUID]) -> dict[str, Any]:
    fields = {k: v for k, v in vars(event).items() if k not in _ENVELOPE}
    return to_jsonable_python(fields)


def causation_id(event: DomainEventProtocol[UUID]) -> str | None:
    """The id of the event that caused this one, in the same stream: the ticket version a
    dispatch reaction answered (its `cause`), or the event an automatic follow-up was
    saved with (`follows_previous`: an SLA commitment after opening, an escalation after
    its breach). None when a request or the passing of time caused it."""
    cause = getattr(event, "cause", None)
    if isinstance(cause, int) and cause >= 1:
        return str(event_id(event.originator_id, cause))
    if getattr(event, "follows_previous", False) and event.originator_version > 1:
        return str(event_id(event.originator_id, event.originator_version - 1))
    return None


def history_entry(event: DomainEventProtocol[UUID]) -> dict[str, Any]:
    return {
        "id": str(event_id(event.originator_id, event.originator_version)),
        "version": event.originator_version,
        "type": event_type(event),
        "recorded_at": event.timestamp.isoformat(),
        "actor": getattr(event, "actor", None),
        "correlation_id": getattr(event, "correlation_id", None),
        "causation_id": causation_id(event),
        "hash": getattr(event, "content_hash", None),
        "previous_hash": getattr(event, "previous_hash", None),
        "data": event_data(event),
    }


def cloud_event(event: DomainEventProtocol[UUID], position: int) -> dict[str, Any]:
    actor = getattr(event, "actor", None) or {}
    envelope = {
        "specversion": "1.0",
        "id": str(event_id(event.originator_id, event.originator_version)),
        "source": f"urn:ticketing:{event_type(event).split('.')[0]}",
        "type": event_type(event),
        "subject": str(event.originator_id),
        "time": event.timestamp.isoformat(),
        "datacontenttype": "application/json",
        # CloudEvents extensions: lower-case names, scalar values.
        "sequence": event.originator_version,
        "position": position,
        "actorkind": actor.get("kind"),
        "actorid": actor.get("id"),
        "correlationid": getattr(event, "correlation_id", None),
        "causationid": causation_id(event),
        "contenthash": getattr(event, "content_hash", None),
        "previoushash": getattr(event, "previous_hash", None),
        "data": event_data(event),
    }
    return {k: v for k, v in envelope.items() if v is not None}
