"""Several read models kept up with the log by one process (the projector).

Each model asked on its own would read the log's end, its saved position and the log
after it, in a transaction of its own, on every pass: at a few dozen tickets a second
that is most of what the projector and the database do. One read of the log's end per
pass serves them all, and a model that has seen up to it is not asked at all.
"""
from __future__ import annotations

from collections.abc import Sequence

from shared.projections.aggregate_rows import AggregateRows
from shared.store import EventStore


def catch_up_together(store: EventStore, projections: Sequence[AggregateRows]) -> int:
    """One pass: every projection short of the log's last position applies its next
    batch. Returns how many are still short of it (more than a batch was new): the
    caller passes again at once for those, and otherwise waits a moment, so that each
    pass has a few events to apply rather than each event a pass of its own."""
    latest = store.recorder.max_notification_id() or 0
    behind = [projection for projection in projections if projection.seen_up_to < latest]
    for projection in behind:
        projection.catch_up(latest=latest)
    return sum(projection.seen_up_to < latest for projection in behind)
