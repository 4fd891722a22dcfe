"""Failures the notifier waits out rather than dies of: NATS or the database briefly
unreachable, slow, or refusing a request. Whatever was being done is left
unacknowledged, so JetStream hands it over again; anything else is a bug and ends
the process, to be seen and restarted."""
from __future__ import annotations

import eventsourcing.persistence
import nats.errors
import nats.js.errors
import sqlalchemy.exc

TRANSIENT = (
    TimeoutError,  # includes nats.errors.TimeoutError and an ack that never came
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.APIError,
    nats.js.errors.NoStreamResponseError,
    sqlalchemy.exc.OperationalError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)

BACKOFF_SECONDS = 1.0
