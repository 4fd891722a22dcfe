"""Human-readable ticket numbers (T-2026-000123): unique, dense and increasing per year.

Each year has one stream whose version N records that number N went to a ticket.
The number event is saved in the same transaction as the ticket's first event, so
the store's (stream, version) uniqueness guarantees no number is ever issued twice,
even by several intake replicas, and no ticket exists without its number.
"""
from __future__ import annotations

import re
from typing import ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import DomainEvent

_NUMBER = re.compile(r"^T-(\d{4})-(\d{6,})$")


class TicketNumberIssued(DomainEvent):
    internal: ClassVar[bool] = True  # bookkeeping: not published on the bus or the audit feed
    cloud_type: ClassVar[str] = "ticket_number.issued"
    ticket_id: UUID
    number: str


def numbers_stream_id(year: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"urn:ticketing:ticket-numbers:{year}")


def format_number(year: int, sequence: int) -> str:
    return f"T-{year}-{sequence:06d}"


def parse_number(text: str) -> tuple[int, int] | None:
    match = _NUMBER.match(text)
    return (int(match[1]), int(match[2])) if match else None
