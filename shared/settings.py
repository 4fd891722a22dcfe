"""One typed settings object per process, read from TICKETING_* environment variables."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETING_", extra="ignore")

    data_dir: Path = Field(Path("var"), description="Where the embedded database, NATS data and locks live.")
    database_url: str | None = Field(
        None,
        description="sqlite:///path, a bare SQLite path, or postgresql://user:pass@host:port/db[?schema=name]. "
        "Default: SQLite at <data_dir>/ticketing.sqlite.",
    )
    nats_url: str | None = Field(None, description="Use this NATS server instead of starting one from the wheel.")
    nats_port: int = Field(4222, description="Port for the NATS server `make run` starts (a free one if taken).")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    dispatch_port: int = 8081
    policy_file: Path = Field(ROOT / "deploy" / "policy.toml", description="The SLA policy (calendars, targets).")
    contracts_file: Path | None = Field(None, description="Contracts loaded (upserted) at start, e.g. deploy/contracts.toml.")
    time_zone: str = Field("Asia/Shanghai", description="Local zone for ticket numbers' year.")
    stream_name: str = Field("EVENTS", description="The JetStream stream every recorded event is relayed to.")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ticketing.sqlite'}"


def persistence_env(database_url: str) -> dict[str, str]:
    """The eventsourcing library's environment for a database URL."""
    url = urlsplit(database_url)
    if url.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
        }
        schema = parse_qs(url.query).get("schema")
        if schema:
            env["POSTGRES_SCHEMA"] = schema[0]
        return env
    if url.scheme in ("sqlite", ""):
        path = database_url.removeprefix("sqlite://").removeprefix("/") if url.scheme else database_url
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "10"}
    raise ValueError(f"unsupported database URL scheme {url.scheme!r}: use sqlite:/// or postgresql://")
