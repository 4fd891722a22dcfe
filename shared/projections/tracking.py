"""Where each projection stands in the notification log."""
from __future__ import annotations

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, select

metadata = MetaData()

positions = Table(
    "projection_positions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Integer, nullable=False),
)


def read_position(conn: Connection, name: str) -> int:
    return conn.scalar(select(positions.c.position).where(positions.c.name == name)) or 0


def save_position(conn: Connection, name: str, position: int) -> None:
    updated = conn.execute(positions.update().where(positions.c.name == name).values(position=position))
    if updated.rowcount == 0:
        conn.execute(positions.insert().values(name=name, position=position))
