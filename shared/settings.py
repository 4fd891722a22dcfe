"""One typed settings object per process, read from TICKETING_* environment variables."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, NonNegativeFloat, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    sla_clock_processes: int = Field(
        1, ge=1, description="How many sla_clock processes `make run` starts; they share the deadlines (on two "
        "cores, two keep 100,000 open tickets' breaches within a second).",
    )
    projector_niceness: int = Field(
        10, ge=0, le=19, description="How far the projector lowers its own CPU priority (nice) at start. Its read "
        "models (ticket list, SLA compliance) may trail the store for a moment when the cores are busy; the "
        "promise path (intake, relay, SLA clock, dispatch) may not wait behind them. 0: as started.",
    )
    notifier_niceness: int = Field(
        10, ge=0, le=19, description="How far the notifier lowers its own CPU priority (nice) at start: a "
        "webhook telling of a recorded event may leave a moment later when the cores are busy, the recording "
        "(the promise path) may not. 0: as started.",
    )
    opentelemetry: bool = Field(
        False, description="FastAPI's native OpenTelemetry in the APIs: spans, metrics and logs through the "
        "global providers you configure (FASTAPI_OTEL_AUTO_CONFIGURE=true adds OTLP exporters).",
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    dispatch_port: int = 8081
    http_keep_alive: int = Field(
        75, ge=1, description="Seconds the APIs keep an idle connection open. Longer than clients keep theirs "
        "(httpx: 5 s), so a client never sends on a connection the server is closing at that moment: the "
        "request would be lost to it as a read error.",
    )
    policy_file: Path = Field(ROOT / "deploy" / "policy.toml", description="The SLA policy (calendars, targets).")
    contracts_file: Path | None = Field(None, description="Contracts loaded (upserted) at start, e.g. deploy/contracts.toml.")
    time_zone: str = Field("Asia/Shanghai", description="Local zone for ticket numbers' year.")
    stream_name: str = Field("EVENTS", description="The JetStream stream every recorded event is relayed to.")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ticketing.sqlite'}"

    # -- NATS credentials, for a server that requires them (deploy/nats/) -------------
    nats_user: str | None = Field(
        None,
        description="The NATS user this process connects as, e.g. its own in deploy/nats/nats-server.conf. "
        "A user and password in TICKETING_NATS_URL (nats://user:pass@host:4222) work too; these win over them.",
    )
    nats_password: SecretStr | None = Field(None, description="TICKETING_NATS_USER's password.")

    @model_validator(mode="after")
    def _nats_user_with_password(self) -> Settings:
        # nats-py sends a user only with a password: either one alone would be dropped unseen.
        if (self.nats_user is None) != (self.nats_password is None):
            raise ValueError("set TICKETING_NATS_USER and TICKETING_NATS_PASSWORD together, or neither")
        return self

    # -- webhooks: the /v1/webhooks API and the notifier --------------------------
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key(s), comma-separated, sealing webhook secrets at rest: the first seals, every one "
        "opens, so a new key is rolled in by putting it first. Unset: one is generated in <data_dir>/secret.key.",
    )
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Host names, addresses or networks (CIDR), comma-separated, that webhooks may reach although "
        "they are loopback, private or link-local, e.g. 127.0.0.1 in tests or an on-premises ticket system.",
    )
    webhook_retry_schedule: Annotated[tuple[NonNegativeFloat, ...], NoDecode] = Field(
        (5, 300, 1800, 7200, 18000, 36000, 36000),
        description="Delay before each retry, comma-separated: seconds or 500ms/5s/5m/2h/1d. When the last retry "
        "fails too, the subscription is disabled.",
    )
    webhook_retry_jitter: float = Field(
        0.2, ge=0, lt=1, description="Each retry delay varies by up to this fraction either way, so receivers "
        "coming back from an outage are not hit by every retry at once.",
    )
    webhook_timeout: float = Field(15.0, gt=0, description="Seconds a receiver has to answer one delivery, in all.")
    webhook_concurrency: int = Field(4, ge=1, description="Requests in flight per subscription and notifier instance.")
    webhook_max_pending: int = Field(
        1000, ge=1, description="Deliveries per subscription out or waiting to retry; past it that subscription's "
        "queue waits (and no other's).",
    )
    webhook_secret_overlap: float = Field(
        86400, ge=0, description="Seconds the previous secret still signs after a rotation."
    )
    webhook_stream_name: str = Field("WEBHOOK_DELIVERIES", description="The JetStream work queue of deliveries.")

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        return _comma_separated(value)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        return tuple(_seconds(part) for part in _comma_separated(value))

    # -- access: API keys, rate limits, request size ----------------------------------
    admin_key: SecretStr | None = Field(
        None, description="An admin API key `make run` records (once) at start, instead of generating and printing one."
    )
    rate_limit: float = Field(
        50, ge=0, description="Requests a second each API key may make on average (0: unlimited); a key may set its own."
    )
    rate_burst: float = Field(100, ge=1, description="Requests a key may make at once before the rate applies.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="The largest request body the APIs accept.")

    # -- dispatch: engineers, spare units and the automatic dispatcher ---------------
    engineers_file: Path = Field(
        ROOT / "deploy" / "engineers.toml",
        description="The dispatch rules and the engineers, loaded (upserted) by dispatch at start.",
    )
    spare_units_file: Path = Field(
        ROOT / "deploy" / "spare_units.toml",
        description="Warehouses, loan rules and the spare units, loaded (upserted) by dispatch at start.",
    )
    dispatch_consumer: str = Field("dispatch", description="The durable JetStream consumer every dispatch instance shares.")
    overdue_check_seconds: float = Field(30.0, gt=0, description="How often dispatch looks for overdue spare-unit loans.")
    clock_start: str | None = Field(
        None,
        description="RFC 3339 instant with offset: dispatch's clock starts there and runs at real speed "
        "(demos, end-to-end tests at 02:00). Unset: the system clock.",
    )

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


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _seconds(value: Any) -> Any:
    """`"5m"` → 300.0; numbers and anything else pass through to the field's own validation."""
    if not isinstance(value, str):
        return value
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a duration (e.g. 30, 500ms, 5s, 5m, 2h, 1d)")
    return float(match[1]) * _UNIT_SECONDS[match[2] or "s"]
