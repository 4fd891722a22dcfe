"""SQLAlchemy engines for read models, on the same database as the event store."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

from sqlalchemy import Connection, Engine, create_engine, event

from shared.settings import persistence_env


def read_engine(database_url: str) -> Engine:
    env = persistence_env(database_url)  # also validates the URL and makes the SQLite folder
    if env["PERSISTENCE_MODULE"].endswith("sqlite"):
        engine = create_engine(f"sqlite:///{env['SQLITE_DBNAME']}", connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_wal)
        return engine
    url = urlsplit(database_url)
    schema = parse_qs(url.query).get("schema", ["public"])[0]
    plain = urlunsplit(("postgresql+psycopg", url.netloc, url.path, "", ""))
    # No ping before each use of a pooled connection: it was a round trip per transaction
    # (a twentieth of the notifier's and dispatch's CPU per ticket). As with the event
    # store's own connections, a connection the server dropped fails its one statement,
    # and the pool then replaces every connection it held from before.
    return create_engine(plain, connect_args={"options": f"-csearch_path={schema}"})


def reading(engine: Engine) -> Connection:
    """A connection for reads: each statement runs on its own, outside a transaction,
    which saves the BEGIN and ROLLBACK round trips of every read (two of three for a
    single query). Nothing is lost by it: under PostgreSQL's READ COMMITTED, each
    statement of a transaction takes a snapshot of its own anyway."""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def _sqlite_wal(connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the API read the list while a projector writes it.
    connection.execute("PRAGMA journal_mode=WAL")
