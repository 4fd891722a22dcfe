"""The engineer list: one row per engineer with their profile and current load, for
the dispatch API's lists and for choosing an engineer.

Rows are the Engineer aggregate's own state after each event, committed with the
position in the notification log. Dispatch reads candidates here and then checks
its choice on the engineer's own stream, so a row trailing the store by a few
milliseconds can cost a retry, never a double booking.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Integer, String, Table, or_, select

from shared.dispatching import Candidate, Rota
from shared.domain.engineer import TEXT_MAX, Engineer
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.tracking import metadata
from shared.read_db import reading

NAME = "engineer_list"

engineers = Table(
    "engineer_list",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(TEXT_MAX), nullable=False),
    Column("branch", String(TEXT_MAX), nullable=False, index=True),
    Column("level", String(2), nullable=False),
    Column("skills", JSON, nullable=False),
    Column("hours", String(TEXT_MAX), nullable=False),
    Column("on_call", JSON, nullable=False),
    Column("max_tickets", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("load", Integer, nullable=False),
    Column("tickets", JSON, nullable=False),  # ticket id → number, carried now
    Column("version", Integer, nullable=False),
)


@dataclass(frozen=True)
class EngineerFilter:
    branches: Collection[str] | None = None  # a branch, or every branch of a region
    level: str | None = None
    skill: str | None = None
    active: bool | None = None
    limit: int = 50
    offset: int = 0


def candidate(row: dict[str, Any]) -> Candidate:
    return Candidate(
        id=row["id"], name=row["name"], branch=row["branch"], level=row["level"], skills=frozenset(row["skills"]),
        rota=Rota(row["hours"], tuple(row["on_call"])), max_tickets=row["max_tickets"], load=row["load"],
        active=row["active"],
    )


class EngineerListProjection(AggregateRows):
    name = NAME
    table = engineers
    key = "id"
    events = Engineer.Event

    def row(self, engineer: Engineer) -> dict[str, Any]:
        return {"id": engineer.code, **engineer.profile.record(), "load": engineer.load,
                "tickets": engineer.tickets, "version": engineer.version}

    def query(self, where: EngineerFilter) -> tuple[list[dict[str, Any]], int]:
        """Matching engineers ordered by id, and how many match in all. The skill filter
        runs here rather than in SQL: JSON containment differs between the databases,
        and a roster is thousands of rows at most."""
        rows = [r for r in self._select(where) if where.skill is None or where.skill in r["skills"]]
        return rows[where.offset:where.offset + where.limit], len(rows)

    def candidates(self, branches: Collection[str], *, also: Collection[str] = ()) -> list[Candidate]:
        """The engineers of these branches, and those named in `also`, as the dispatch rules see them."""
        where = or_(engineers.c.branch.in_(list(branches)), engineers.c.id.in_(list(also)))
        # Not the tickets carried: decoding that JSON for every engineer would double the read.
        columns = [c for c in engineers.c if c.name != "tickets"]
        with reading(self.engine) as conn:
            return [candidate(dict(r)) for r in conn.execute(select(*columns).where(where)).mappings()]

    def _select(self, where: EngineerFilter) -> list[dict[str, Any]]:
        conditions = []
        if where.branches is not None:
            conditions.append(engineers.c.branch.in_(list(where.branches)))
        if where.level is not None:
            conditions.append(engineers.c.level == where.level)
        if where.active is not None:
            conditions.append(engineers.c.active == where.active)
        with reading(self.engine) as conn:
            return [dict(r) for r in conn.execute(select(engineers).where(*conditions).order_by(engineers.c.id)).mappings()]
