"""How ticketctl shows things to a person: plain lines that read well in a terminal
and still grep well, local times, and one table for the SLA report. `--json` output
bypasses all of this."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Column, Table

from shared.audit import TARGET_NAMES, TimelineLine
from shared.integrity import Verdict


def local(instant: datetime | str, zone: ZoneInfo) -> str:
    moment = datetime.fromisoformat(instant) if isinstance(instant, str) else instant
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def actor(who: dict[str, str] | None) -> str:
    return f"{who.get('kind')}:{who.get('id')}" if who else "-"


def history(entries: Iterable[dict[str, Any]], zone: ZoneInfo) -> Iterator[str]:
    """One header line per event, then its data, one field a line."""
    for entry in entries:
        cause = f"  causation {entry['causation_id']}" if entry["causation_id"] else ""
        yield (f"v{entry['version']:<3} {local(entry['recorded_at'], zone)}  {entry['type']}  by {actor(entry['actor'])}"
               f"  correlation {entry['correlation_id'] or '-'}{cause}")
        for name, value in entry["data"].items():
            yield f"       {name}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"


def feed(entry: dict[str, Any], zone: ZoneInfo) -> str:
    at = local(entry["recorded_at"], zone)
    return f"{entry['position']:>8}  {at}  {entry['type']:<28} {entry['stream_id']}  {actor(entry['actor'])}"


def timeline(lines: Iterable[TimelineLine], zone: ZoneInfo) -> Iterator[str]:
    for line in lines:
        yield f"{local(line.at, zone)[:16]}  {line.text}"


def verdict(result: Verdict, label: str | None) -> str:
    """`label` names the broken stream, e.g. `ticket T-2026-000123 (stream …)`."""
    broken = result.broken
    if broken is None:
        return f"intact: {result.checked:,} events checked"
    return (f"BROKEN: {label} version {broken.version}: {broken.problem} "
            f"(first broken link; {result.checked:,} events checked)")


def sla_report(report: dict[str, Any]) -> tuple[str, Table, list[str]]:
    """A heading, the table of outcomes per target, and which tickets breached what."""
    heading = (f"SLA compliance of {report['customer']} for tickets received in {report['month']} "
               f"({report['time_zone']}): {report['tickets']} tickets, {report['committed']} with an SLA commitment")
    table = Table("target", *(Column(name, justify="right") for name in ("met", "breached", "open", "stopped", "compliance")))
    for row in report["targets"]:
        rate = "—" if row["compliance"] is None else f"{row['compliance']:.1%}"
        table.add_row(TARGET_NAMES[row["target"]], *(str(row[k]) for k in ("met", "breached", "open", "stopped")), rate)
    breaches = [f"breached {TARGET_NAMES[row['target']]}: {', '.join(row['breached_tickets'])}"
                for row in report["targets"] if row["breached_tickets"]]
    return heading, table, breaches
