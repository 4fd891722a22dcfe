"""Export and import the event store as CloudEvents JSON lines: an archive auditors can
read without the product, and the way to move or restore a store (SQLite ⇄ PostgreSQL).

A line is `shared.event_format.cloud_event` plus what a lossless round trip needs:
`eventtopic` (the event's class), `originatortopic` (the aggregate's class, on a
stream's first event) and `internal: true` on bookkeeping events the feed hides (the
ticket numbers, without which no ticket could be looked up by number). Import types
every value again from the event class's annotations, checks each hash chain as it
reads, and writes through the store's mapper and recorder in the exported order: the
restored store holds the same events, with the same hashes, in the same order (its
positions are renumbered from 1).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import cache
from itertools import islice
from typing import Any, TextIO, get_type_hints
from uuid import UUID

from eventsourcing.domain import DomainEvent, DomainEventProtocol
from eventsourcing.utils import TopicError, get_topic, resolve_topic
from pydantic import TypeAdapter, ValidationError

from shared.event_format import cloud_event, is_internal
from shared.integrity import verify_events
from shared.store import EventStore

BATCH = 500
_OWN_TOPICS = ("shared.",)

# Extension attribute → the event attribute it carries (cloud_event keeps these out of `data`).
_ENVELOPE_FIELDS = {
    "sequence": "originator_version",
    "time": "timestamp",
    "originatortopic": "originator_topic",
    "correlationid": "correlation_id",
    "previoushash": "previous_hash",
    "contenthash": "content_hash",
}
_ACTOR_FIELDS = {"actorkind": "kind", "actorid": "id"}

Progress = Callable[[int], None]


class ImportRefused(Exception):
    """The store is not empty, or a line cannot be restored exactly; says which line and why."""


def export(store: EventStore, out: TextIO, since: datetime | None = None, *, progress: Progress | None = None) -> int:
    """Write every event recorded at or after `since` (all when None), internal ones
    included, one JSON line each in recorded order; returns how many. `progress`
    hears the position reached after each batch."""
    written = position = 0
    while notifications := store.recorder.select_notifications(position, BATCH, inclusive_of_start=False):
        for notification in notifications:
            event = store.decode(notification)
            if since is None or event.timestamp >= since:
                out.write(json.dumps(exported(event, notification.id), ensure_ascii=False) + "\n")
                written += 1
        position = notifications[-1].id
        if progress:
            progress(position)
    return written


def exported(event: DomainEventProtocol[UUID], position: int) -> dict[str, Any]:
    line = cloud_event(event, position) | {"eventtopic": get_topic(type(event))}
    if topic := getattr(event, "originator_topic", None):
        line["originatortopic"] = topic
    if is_internal(event):
        line["internal"] = True
    return line


def import_events(store: EventStore, lines: Iterable[str]) -> int:
    """Restore an export into an empty store; returns how many events. Each batch is
    checked whole before it is written, so a bad line stops the import at its batch
    (`ticketctl import` checks the whole file first: a refused file writes nothing)."""
    ensure_empty(store)
    imported = 0
    events = restored_events(lines)
    while batch := list(islice(events, BATCH)):
        store.recorder.insert_events([store.mapper.to_stored_event(event) for event in batch])
        imported += len(batch)
    return imported


def ensure_empty(store: EventStore) -> None:
    if store.recorder.max_notification_id():
        raise ImportRefused("the store already holds events: import only into an empty store")


def restored_events(lines: Iterable[str]) -> Iterator[DomainEventProtocol[UUID]]:
    """Each exported line back to its event, in order, its hash chain checked."""
    heads: dict[UUID, tuple[int, str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = restored(json.loads(line))
        except (ValueError, KeyError, TypeError) as error:
            reason = f"missing {error.args[0]!r}" if isinstance(error, KeyError) else str(error)
            raise ImportRefused(f"line {number}: {reason}") from error
        broken = verify_events((event,), heads).broken
        if broken:
            raise ImportRefused(f"line {number}: stream {broken.stream_id} version {broken.version}: {broken.problem}")
        yield event


def restored(line: dict[str, Any]) -> DomainEventProtocol[UUID]:
    """One exported line back to the event the store held, value types included."""
    cls = _event_class(line["eventtopic"])
    fields = dict(line["data"])
    fields |= {name: line[attribute] for attribute, name in _ENVELOPE_FIELDS.items() if attribute in line}
    if actor := {key: line[attribute] for attribute, key in _ACTOR_FIELDS.items() if attribute in line}:
        fields["actor"] = actor
    state = {name: _typed(cls, name, value) for name, value in fields.items()}
    state["originator_id"] = UUID(line["subject"])
    # As the store's mapper builds events: no __init__, which would stamp a new time.
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event


def _event_class(topic: str) -> type[DomainEvent]:
    # Only the product's own classes: a line must not make import load arbitrary modules.
    try:
        cls = resolve_topic(topic) if topic.startswith(_OWN_TOPICS) else None
    except TopicError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
        raise ValueError(f"{topic!r} is not an event class of this product")
    return cls


def _typed(cls: type, name: str, value: Any) -> Any:
    # JSON numbers, booleans and null come back exactly as stored (a float field holding
    # 5 must stay 5, or its hash changes); text and containers may stand for richer
    # types the annotation names: instants, UUIDs.
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        return _adapter(cls, name).validate_python(value)
    except ValidationError as error:
        raise ValueError(f"{name}: {error.errors()[0]['msg']}") from None


@cache
def _adapter(cls: type, name: str) -> TypeAdapter[Any]:
    return TypeAdapter(get_type_hints(cls).get(name, Any))

