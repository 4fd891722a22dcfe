"""Where each projection stands in the notification log."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, select, text

from shared.store import START_LOCK, surviving_start_race

metadata = MetaData()

positions = Table(
    "projection_positions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Integer, nullable=False),
)


def create_tables(engine: Engine, tables: Sequence[Table] | None = None) -> None:
    """`metadata`'s tables (or `tables`), made if missing. On PostgreSQL processes take
    turns, as when opening the store; SQLite's loser of a race tries again."""
    if engine.dialect.name != "postgresql":
        surviving_start_race(lambda: metadata.create_all(engine, tables=tables))
        return
    with engine.begin() as conn:  # DDL is transactional there: the lock ends at commit
        conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": START_LOCK})
        metadata.create_all(conn, tables=tables)


def read_position(conn: Connection, name: str) -> int:
    return conn.scalar(select(positions.c.position).where(positions.c.name == name)) or 0


def save_position(conn: Connection, name: str, position: int) -> None:
    updated = conn.execute(positions.update().where(positions.c.name == name).values(position=position))
    if updated.rowcount == 0:
        conn.execute(positions.insert().values(name=name, position=position))
