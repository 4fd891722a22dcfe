"""ticketctl: the ops and audit command line, over the same store the services use
(settings from TICKETING_* variables, e.g. TICKETING_DATABASE_URL).

Every command opens the store itself and closes it on the way out; long ones show a
progress bar on stderr, so stdout stays clean for pipes (`ticketctl export > x.jsonl`).
Exit codes: 0 fine, 1 the answer is bad (a broken chain, a refused import), 2 bad input.
"""
from __future__ import annotations

import getpass
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ContextManager, NoReturn, TextIO
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import rich.progress
import typer
from pydantic_core import to_jsonable_python
from rich.console import Console
from sqlalchemy import Engine

from services.ticketctl import render
from shared.audit import FeedFilter, read_feed, timeline
from shared.clock import SystemClock
from shared.desk import TicketDesk
from shared.domain.api_key import Role
from shared.domain.errors import DomainError, TicketNotFound
from shared.event_format import history_entry
from shared.integrity import verify_store, verify_stream
from shared.keys import Keyring
from shared.projections.aggregate_rows import AggregateRows
from shared.projections.contract_list import ContractListProjection
from shared.projections.engineer_list import EngineerListProjection
from shared.projections.key_list import KeyListProjection
from shared.projections.rebuild import catch_up_all, rebuild
from shared.projections.sla_compliance import MONTH_PATTERN, SlaComplianceProjection
from shared.projections.spare_unit_list import SpareUnitListProjection
from shared.projections.ticket_list import TicketListProjection
from shared.read_db import read_engine
from shared.settings import Settings
from shared.sla.policy import Policy, load_policy
from shared.store import EventStore, open_store
from shared.transfer import ImportRefused, ensure_empty, export, import_events, restored_events

app = typer.Typer(help="Audit and operate the ticketing event store.", no_args_is_help=True)
projections_app = typer.Typer(help="Read models built from the event store.", no_args_is_help=True)
report_app = typer.Typer(help="Periodic reports.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")
keys_app = typer.Typer(help="API keys: issue, list, revoke.", no_args_is_help=True)
app.add_typer(report_app, name="report")
app.add_typer(keys_app, name="keys")

stderr = Console(stderr=True, soft_wrap=True)  # messages are lines, never wrapped at 80 columns
POLL_SECONDS = 0.5
FEED_PAGE = 500

Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON instead of text.")]
TicketRef = Annotated[str, typer.Argument(help="Ticket number (T-2026-000123) or id.")]


@dataclass
class Ops:
    """What the commands work on, opened on first use."""

    settings: Settings
    store: EventStore

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.time_zone)

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.settings.policy_file)

    @cached_property
    def desk(self) -> TicketDesk:
        return TicketDesk(self.store, SystemClock(), self.settings.time_zone)

    @cached_property
    def engine(self) -> Engine:
        return read_engine(self.settings.resolved_database_url())

    @cached_property
    def sla_compliance(self) -> SlaComplianceProjection:
        return SlaComplianceProjection(self.store, self.engine, self.policy, self.settings.time_zone)

    def projections(self) -> dict[str, AggregateRows]:
        return {
            "ticket_list": TicketListProjection(self.store, self.engine),
            "contract_list": ContractListProjection(self.store, self.engine),
            "sla_compliance": self.sla_compliance,
            "key_list": self.key_list,
            "engineer_list": EngineerListProjection(self.store, self.engine),  # engineers' workload
            "spare_unit_list": SpareUnitListProjection(self.store, self.engine),
        }

    @cached_property
    def key_list(self) -> KeyListProjection:
        return KeyListProjection(self.store, self.engine)

    @cached_property
    def keyring(self) -> Keyring:
        return Keyring(self.store, SystemClock())

    def ticket_id(self, reference: str) -> UUID:
        # Only the first event is replayed: a stream with a tampered or missing event
        # must still be found, so that `verify` can say what is wrong with it.
        try:
            return self.desk.get(reference, version=1).id
        except TicketNotFound:
            fail(f"no ticket {reference}", code=2)

    def label(self, stream_id: UUID) -> str:
        """`ticket T-2026-000123 (stream …)` for a ticket, `stream …` for anything else."""
        first = next(iter(self.store.events.get(stream_id, lte=1)), None)
        number = getattr(first, "number", None)
        return f"ticket {number} (stream {stream_id})" if number else f"stream {stream_id}"

    def close(self) -> None:
        self.store.close()
        if "engine" in vars(self):  # only if a command used it
            self.engine.dispose()


@contextmanager
def opened() -> Iterator[Ops]:
    settings = Settings()
    ops = Ops(settings, open_store(settings.resolved_database_url()))
    try:
        yield ops
    finally:
        ops.close()


def fail(message: str, code: int = 1) -> NoReturn:
    stderr.print(message, style="bold red", markup=False, highlight=False)
    raise typer.Exit(code)


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable_python(value), ensure_ascii=False, indent=2))


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar on stderr when it is a terminal; yields the function that moves it to a position."""
    columns = rich.progress.Progress.get_default_columns()
    with rich.progress.Progress(*columns, console=stderr, disable=not stderr.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda position: bar.update(task, completed=position)


# -- audit ---------------------------------------------------------------------------


@app.command()
def history(ticket: TicketRef, as_json: Json = False) -> None:
    """A ticket's full history: every event with its version, time, actor, correlation and causation ids and data."""
    with opened() as ops:
        try:
            entries = [history_entry(event) for event in ops.desk.history(ticket)]
        except TicketNotFound:
            fail(f"no ticket {ticket}", code=2)
        if as_json:
            emit_json(entries)
        else:
            for line in render.history(entries, ops.zone):
                typer.echo(line)


@app.command("timeline")
def show_timeline(ticket: TicketRef, as_json: Json = False) -> None:
    """A ticket's history in plain words, each SLA outcome stated where it was decided."""
    with opened() as ops:
        try:
            lines = timeline(ops.desk.history(ticket), ops.policy, ops.zone)
        except TicketNotFound:
            fail(f"no ticket {ticket}", code=2)
        if as_json:
            emit_json(lines)
        else:
            for line in render.timeline(lines, ops.zone):
                typer.echo(line)


@app.command()
def tail(
    after: Annotated[int, typer.Option(min=0, help="Start after this position (0: from the beginning).")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for new events until Ctrl-C.")] = False,
    types: Annotated[list[str] | None, typer.Option("--type", help="Only these types; `sla.*` matches a family.")] = None,
    ticket: Annotated[str | None, typer.Option(help="Only this ticket's events.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """The global feed of recorded events, in order, with the positions to resume from."""
    with opened() as ops:
        streams = frozenset({ops.ticket_id(ticket)}) if ticket else None
        where = FeedFilter(types=tuple(types or ()), streams=streams)
        try:
            while True:
                entries, position = read_feed(ops.store, after, FEED_PAGE, where)
                for entry in entries:
                    line = json.dumps(to_jsonable_python(entry), ensure_ascii=False) if as_json else render.feed(entry, ops.zone)
                    typer.echo(line)
                if position == after:  # nothing new was recorded
                    if not follow:
                        return
                    time.sleep(POLL_SECONDS)
                after = position
        except KeyboardInterrupt:
            return


@app.command()
def verify(
    ticket: Annotated[str | None, typer.Argument(help="One ticket; the whole store when omitted.")] = None,
    as_json: Json = False,
) -> None:
    """Recompute the hash chains; exit code 1 and the first broken link when one is broken."""
    with opened() as ops:
        if ticket:
            result = verify_stream(ops.store, ops.ticket_id(ticket))
        else:
            # The log's last position is one cheap query, and the pass reads up to it in order.
            with progress_bar("verifying", ops.store.recorder.max_notification_id()) as moved:
                result = verify_store(ops.store, progress=moved)
        if as_json:
            emit_json(result)
        else:
            typer.echo(render.verdict(result, ops.label(result.broken.stream_id) if result.broken else None))
        if not result.intact:
            raise typer.Exit(1)


# -- export and import -----------------------------------------------------------------


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 instant") from None
    if instant.tzinfo is None:
        raise typer.BadParameter("give the offset too, e.g. 2026-11-01T00:00:00+08:00")
    return instant


@app.command("export")
def export_events(
    since: Annotated[
        datetime | None, typer.Option(parser=_instant, metavar="ISO", help="Only events recorded at or after this instant.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Every event (internal ones included) as CloudEvents JSON lines, in recorded order."""
    with opened() as ops:
        started = time.perf_counter()
        with progress_bar("exporting", ops.store.recorder.max_notification_id()) as moved:
            if output is None:
                written = export(ops.store, sys.stdout, since, progress=moved)
            else:
                with output.open("w", encoding="utf-8") as out:
                    written = export(ops.store, out, since, progress=moved)
        stderr.print(f"exported {written:,} events{_rate(written, started)}", highlight=False)


@app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A file written by `ticketctl export`.")],
) -> None:
    """Restore an export into an empty store; the whole file is checked first, so a refused file writes nothing."""
    with opened() as ops:
        try:
            ensure_empty(ops.store)
            with _reading(path, "checking") as lines:
                for _ in restored_events(lines):
                    pass
            started = time.perf_counter()
            with _reading(path, "importing") as lines:
                imported = import_events(ops.store, lines)
        except ImportRefused as refused:
            fail(f"import refused: {refused}")
        stderr.print(f"imported {imported:,} events{_rate(imported, started)}; "
                     "the read models fill from the projector, or run `ticketctl projections rebuild`", highlight=False)


def _reading(path: Path, description: str) -> ContextManager[TextIO]:
    """The file, with a bar on stderr showing how much of it was read."""
    return rich.progress.open(path, "r", encoding="utf-8", description=description, console=stderr,
                              disable=not stderr.is_terminal)


def _rate(count: int, started: float) -> str:
    seconds = time.perf_counter() - started
    return f" in {seconds:.1f} s ({count / seconds:,.0f} events/s)" if count and seconds > 0 else ""


# -- read models -------------------------------------------------------------------------


@projections_app.command("rebuild")
def rebuild_projections(
    name: Annotated[str | None, typer.Argument(help="One read model; all of them when omitted.")] = None,
) -> None:
    """Clear read models and replay the whole event store into them (stop the projector first)."""
    with opened() as ops:
        chosen = ops.projections()
        if name is not None:
            if name not in chosen:
                fail(f"no read model {name!r}; there are {', '.join(chosen)}", code=2)
            chosen = {name: chosen[name]}
        total = ops.store.recorder.max_notification_id()
        for projection_name, projection in chosen.items():
            started = time.perf_counter()
            with progress_bar(projection_name, total) as moved:
                replayed = rebuild(projection, progress=moved)
            stderr.print(f"{projection_name}: rebuilt from {replayed:,} events{_rate(replayed, started)}", highlight=False)


@report_app.command("sla")
def sla_report(
    customer: Annotated[str, typer.Option(help="The customer, as named on its tickets.")],
    month: Annotated[str, typer.Option(help="YYYY-MM, of the tickets' receipt in local time.", metavar="YYYY-MM")],
    as_json: Json = False,
) -> None:
    """The SLA compliance report of a customer's month: met, breached, open and stopped per target."""
    if not re.fullmatch(MONTH_PATTERN, month):
        fail(f"--month {month!r}: expected YYYY-MM, e.g. 2026-11", code=2)
    with opened() as ops:
        # Catch up first: the report then covers every event recorded, projector or not.
        with progress_bar("catching up", ops.store.recorder.max_notification_id()) as moved:
            catch_up_all(ops.sla_compliance, progress=moved)
        report = ops.sla_compliance.report(customer, month)
        if as_json:
            emit_json(report)
            return
        heading, table, breaches = render.sla_report(report)
        typer.echo(heading)
        Console().print(table)
        for line in breaches:
            typer.echo(line)


# -- API keys ------------------------------------------------------------------------------

OPERATOR = {"kind": "operator", "id": getpass.getuser()}


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="Who holds the key, e.g. zabbix-acme; recorded as the actor.")],
    role: Annotated[Role, typer.Option(help="What the key may do.")],
    customer: Annotated[list[str], typer.Option(help="integration keys: a customer served (repeat for more).")] = [],  # noqa: B006 - typer's list option
    engineer: Annotated[str | None, typer.Option(help="engineer keys: the engineer's id, e.g. E-017.")] = None,
    rate: Annotated[float | None, typer.Option(help="Requests a second; default: the service's.")] = None,
    as_json: Json = False,
) -> None:
    """Issue a key and print it, this once: only its digest is kept."""
    with opened() as ops:
        try:
            key, secret = ops.keyring.issue(name=name, role=role, customers=tuple(customer), engineer=engineer,
                                            rate_per_second=rate, actor=OPERATOR, correlation_id=str(uuid4()))
        except DomainError as error:
            fail(str(error), code=2)
    if as_json:
        emit_json({"id": key.id, "name": key.name, "role": key.role, "key": secret})
        return
    stderr.print(f"issued {key.role} key {key.id} for {key.name}; store it now, it is not shown again:", highlight=False)
    typer.echo(secret)


@keys_app.command("list")
def list_keys(
    role: Annotated[Role | None, typer.Option(help="Only keys of this role.")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Also revoked keys.")] = False,
    as_json: Json = False,
) -> None:
    """Keys, newest first (never the keys themselves)."""
    with opened() as ops:
        catch_up_all(ops.key_list)
        rows, _ = ops.key_list.query(role=role, active=None if revoked else True, limit=10_000, offset=0)
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        scope = ", ".join(row["customers"]) or row["engineer"] or "all"
        state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
        typer.echo(f"{row['id']}  {row['role']:<11} {row['name']}  [{scope}]  {state}")


@keys_app.command("revoke")
def revoke_key(
    key: Annotated[UUID, typer.Argument(help="The key's id (not the key).")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
) -> None:
    """Revoke a key for good; every service refuses it from the next request on."""
    with opened() as ops:
        try:
            ops.keyring.revoke(key, reason=reason, actor=OPERATOR, correlation_id=str(uuid4()))
        except DomainError as error:
            fail(str(error), code=2)
    stderr.print(f"revoked {key}", highlight=False)
