"""Hash-chained aggregates: tamper evidence for every stream.

Each event carries `content_hash`, the SHA-256 of its canonical content (stream,
version, type, time, data and `previous_hash`), and `previous_hash`, the content hash
of the event before it in the same stream ("" for the first). Editing a stored event
changes its content hash; removing or reordering one breaks the next link. Both are
computed when the event is triggered, from the aggregate's own head, so chaining
costs no extra read.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from pydantic_core import to_jsonable_python

GENESIS = ""
_NOT_CONTENT = {"originator_id", "originator_version", "originator_topic", "content_hash"}


def content_hash(kind: str, stream_id: UUID, version: int, fields: dict[str, Any]) -> str:
    body = {"stream": str(stream_id), "version": version, "type": kind}
    body |= {k: v for k, v in fields.items() if k not in _NOT_CONTENT}
    canonical = json.dumps(to_jsonable_python(body), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recomputed_hash(event: Chained.Event) -> str:
    """The hash a stored event should carry, computed again from what was stored."""
    return content_hash(type(event).__qualname__, event.originator_id, event.originator_version, vars(event))


class Chained(Aggregate):
    chain_head = GENESIS

    class Event(Aggregate.Event):
        previous_hash: str
        content_hash: str

        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.chain_head = self.content_hash
            return aggregate

    @classmethod
    def _create(cls, event_class: Any, *, id: UUID | None = None, **kwargs: Any) -> Any:  # noqa: A002
        if id is None:
            raise ValueError(f"{cls.__name__} needs an explicit id to chain its first event")
        kwargs = _chained(event_class, id, cls.INITIAL_VERSION, GENESIS, kwargs)
        return super()._create(event_class, id=id, **kwargs)

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        super().trigger_event(event_class, **_chained(event_class, self.id, self.version + 1, self.chain_head, kwargs))


def _chained(event_class: Any, stream_id: UUID, version: int, previous: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    fields = {**kwargs, "previous_hash": previous}
    if fields.get("timestamp") is None:
        fields["timestamp"] = event_class.create_timestamp()
    fields["content_hash"] = content_hash(event_class.__qualname__, stream_id, version, fields)
    return fields
