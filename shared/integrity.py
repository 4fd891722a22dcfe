"""`verify`: recompute every hash chain from what the store holds, and report the first
broken link (shared/domain/chain.py says what the hashes cover)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

from shared.domain.chain import GENESIS, Chained, recomputed_hash
from shared.store import EventStore


@dataclass(frozen=True)
class BrokenLink:
    stream_id: UUID
    version: int
    problem: str


@dataclass(frozen=True)
class Verdict:
    checked: int
    broken: BrokenLink | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify_events(events: Iterable[object], heads: dict[UUID, tuple[int, str]] | None = None) -> Verdict:
    """Check chained events in stream order (several streams may interleave)."""
    heads = {} if heads is None else heads
    checked = 0
    for event in events:
        if not isinstance(event, Chained.Event):
            continue
        checked += 1
        version, head = heads.get(event.originator_id, (0, GENESIS))
        stream, at = event.originator_id, event.originator_version
        if at != version + 1:
            return Verdict(checked, BrokenLink(stream, at, f"version {at} follows version {version}: an event is missing"))
        if event.previous_hash != head:
            return Verdict(checked, BrokenLink(stream, at, "chain broken: previous hash does not match the event before"))
        if recomputed_hash(event) != event.content_hash:
            return Verdict(checked, BrokenLink(stream, at, "content altered: hash does not match what is stored"))
        heads[stream] = (at, event.content_hash)
    return Verdict(checked, None)


def verify_stream(store: EventStore, stream_id: UUID) -> Verdict:
    return verify_events(store.events.get(stream_id))


def verify_store(store: EventStore, batch: int = 1_000, *, progress: Callable[[int], None] | None = None) -> Verdict:
    """Every stream, in one pass over the notification log; `progress` hears the
    position reached after each batch."""
    heads: dict[UUID, tuple[int, str]] = {}
    checked, position = 0, 0
    while notifications := store.recorder.select_notifications(position, batch, inclusive_of_start=False):
        verdict = verify_events((store.decode(n) for n in notifications), heads)
        checked += verdict.checked
        if verdict.broken:
            return Verdict(checked, verdict.broken)
        position = notifications[-1].id
        if progress:
            progress(position)
    return Verdict(checked, None)
