"""ticketctl run as a user runs it: the installed console script in a subprocess, the
store named by TICKETING_DATABASE_URL, on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.domain.errors import Unauthenticated
from shared.domain.ticket import Ticket
from shared.event_format import is_internal
from shared.settings import ROOT, Settings
from tests.integration.test_integrity import tamper
from tests.integration.test_projections import FAULT, worked_tickets
from tests.integration.test_transfer import other_url  # noqa: F401 - a fixture: an empty store of the other kind

TICKETCTL = Path(sys.executable).parent / "ticketctl"
NMS = {"kind": "client", "id": "nms"}
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml"), clock=clock)
    yield parts
    parts.close()


@pytest.fixture
def tickets(service: Intake, clock: FakeClock) -> dict[str, Ticket]:
    return worked_tickets(service, clock)


# rich draws its bars as on a terminal, in plain text, and once (the final state) rather
# than redrawn in place: what a person would see last, readable in a captured stderr.
TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", "NO_COLOR": "1"}


def environment(database_url: str) -> dict[str, str]:
    return os.environ | {"TICKETING_DATABASE_URL": database_url}


def runner(database_url: str, cwd: Path) -> Run:
    def run(*args: str, env: dict[str, str] | None = None, **options: object) -> subprocess.CompletedProcess[str]:
        options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | options
        return subprocess.run([str(TICKETCTL), *args], env=environment(database_url) | (env or {}), cwd=cwd, text=True,
                              timeout=120, **options)
    return run


@pytest.fixture
def ticketctl(database_url: str, tmp_path: Path) -> Run:
    return runner(database_url, tmp_path)


def test_history_timeline_and_tail(ticketctl: Run, tickets: dict[str, Ticket], service: Intake) -> None:
    met = tickets["met"]
    history = ticketctl("history", met.number)
    assert history.returncode == 0, history.stderr
    assert history.stdout.startswith(f"v1   2026-11-20 17:00:00  ticket.opened  by client:hotline  correlation c-open\n")
    assert "       cause: 电源故障\n" in history.stdout
    entries = json.loads(ticketctl("history", str(met.id), "--json").stdout)
    assert [e["version"] for e in entries] == list(range(1, met.version + 1))
    # The SLA commitment names the opening that caused it; a request's event names no cause.
    assert (f"v2   2026-11-20 17:00:00  sla.committed  by service:sla-policy  correlation c-open"
            f"  causation {entries[0]['id']}\n") in history.stdout
    assert entries[1]["causation_id"] == entries[0]["id"] and entries[2]["causation_id"] is None
    assert "\nv3   2026-11-20 17:18:00  ticket.acknowledged  by engineer:E-017  correlation c-act\n" in history.stdout

    timeline = ticketctl("timeline", met.number).stdout.splitlines()
    assert timeline[2] == "2026-11-20 17:18  acknowledged by engineer E-017: 远程诊断 — response met 42 min before due"
    missing = ticketctl("timeline", "T-2026-999999")
    assert (missing.returncode, missing.stderr.strip()) == (2, "no ticket T-2026-999999")

    store = service.desk.store
    public = [n.id for n in store.recorder.select_notifications(0, 1000) if not is_internal(store.decode(n))]
    feed = ticketctl("tail").stdout.splitlines()
    assert [int(line.split()[0]) for line in feed] == public
    rest = ticketctl("tail", "--after", str(public[-3])).stdout.splitlines()
    assert [int(line.split()[0]) for line in rest] == public[-2:]
    breaches = [json.loads(line) for line in ticketctl("tail", "--type", "sla.breached", "--json").stdout.splitlines()]
    assert [(e["stream_id"], e["data"]["target"]) for e in breaches] == [(str(tickets["breached"].id), "response")]


def test_tail_follows_the_feed_until_interrupted(database_url: str, tmp_path: Path, service: Intake, clock: FakeClock) -> None:
    command = [str(TICKETCTL), "tail", "--follow", "--json", "--type", "ticket.opened"]
    follower = subprocess.Popen(command, env=environment(database_url), cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in follower.stdout:  # type: ignore[union-attr]
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        opened = [service.desk.open(details=FAULT, token=None, actor=NMS, correlation_id=f"c-{i}").ticket for i in range(2)]
        seen = [json.loads(lines.get(timeout=60))["data"]["number"] for _ in opened]
        assert seen == [ticket.number for ticket in opened]
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0


def test_verify_names_the_first_broken_link(
    ticketctl: Run, tickets: dict[str, Ticket], service: Intake, database_url: str
) -> None:
    clean = ticketctl("verify")
    assert (clean.returncode, clean.stdout) == (0, "intact: 32 events checked\n")
    shown = ticketctl("verify", env=TERMINAL)
    assert shown.stdout == clean.stdout  # the bar goes to stderr only
    [bar] = [line for line in shown.stderr.splitlines() if "verifying" in line]  # among cursor hide/show codes
    assert "verifying ━" in bar and " 100% " in bar  # a bar with a total (a spinner has no percentage), filled
    met = tickets["met"]
    edited = tamper(
        service, database_url,
        "UPDATE {table} SET state = CAST(REPLACE(CAST(state AS TEXT), '更换电源模块', '重启') AS BLOB) WHERE CAST(state AS TEXT) LIKE ?",
        "UPDATE {table} SET state = convert_to(replace(convert_from(state, 'UTF8'), '更换电源模块', '重启'), 'UTF8') "
        "WHERE convert_from(state, 'UTF8') LIKE %s",
        "%更换电源模块%",
    )
    assert edited == 1
    broken = ticketctl("verify")
    assert broken.returncode == 1
    assert broken.stdout.startswith(f"BROKEN: ticket {met.number} (stream {met.id}) version {met.version}: content altered")
    assert ticketctl("verify", met.number).returncode == 1
    assert ticketctl("verify", tickets["late"].number).returncode == 0
    verdict = json.loads(ticketctl("verify", "--json").stdout)
    assert verdict["broken"] == {"stream_id": str(met.id), "version": met.version,
                                 "problem": "content altered: hash does not match what is stored"}


def test_export_then_import_into_an_empty_store(
    ticketctl: Run, tickets: dict[str, Ticket], other_url: str, tmp_path: Path  # noqa: F811 - the imported fixture
) -> None:
    archive = tmp_path / "events.jsonl"
    with archive.open("w", encoding="utf-8") as out:
        exported = ticketctl("export", stdout=out)
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr.startswith("exported 38 events")  # 32 chained, 6 ticket numbers

    restored = runner(other_url, tmp_path)
    imported = restored("import", str(archive))
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr.startswith("imported 38 events")
    assert restored("verify").stdout == "intact: 32 events checked\n"
    number = tickets["met"].number  # found by number: the ticket numbers came across too
    assert restored("history", number, "--json").stdout == ticketctl("history", number, "--json").stdout
    report = ("report", "sla", "--customer", "C-汉中电力", "--month", "2026-11", "--json")
    assert json.loads(restored(*report).stdout) == json.loads(ticketctl(*report).stdout)

    again = restored("import", str(archive))
    assert again.returncode == 1
    assert again.stderr.strip() == "import refused: the store already holds events: import only into an empty store"


def test_sla_report_and_projection_rebuild(ticketctl: Run, tickets: dict[str, Ticket]) -> None:
    report = ticketctl("report", "sla", "--customer", "C-汉中电力", "--month", "2026-11")
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == ("SLA compliance of C-汉中电力 for tickets received in 2026-11 (Asia/Shanghai): "
                        "4 tickets, 4 with an SLA commitment")
    response = [line.replace("│", " ").split() for line in lines if line.startswith("│ response")]
    assert response == [["response", "2", "2", "0", "0", "50.0%"]]
    assert lines[-1] == f"breached response: {tickets['breached'].number}, {tickets['late'].number}"
    assert ticketctl("report", "sla", "--customer", "C-汉中电力", "--month", "2026-13").returncode == 2

    rebuilt = ticketctl("projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert [line.split(":")[0] for line in rebuilt.stderr.splitlines()] == ["ticket_list", "contract_list", "sla_compliance", "key_list", "engineer_list",
                                                                     "spare_unit_list"]
    assert ticketctl("report", "sla", "--customer", "C-汉中电力", "--month", "2026-11").stdout == report.stdout
    assert ticketctl("projections", "rebuild", "engineer_workload").returncode == 2


def test_keys_create_list_revoke(ticketctl: Run, service: Intake) -> None:
    created = ticketctl("keys", "create", "--name", "zabbix", "--role", "integration", "--customer", "C-汉中电力",
                        "--json")
    assert created.returncode == 0, created.stderr
    issued = json.loads(created.stdout)
    principal = asyncio.run(service.gate.keyring.authenticate(issued["key"]))
    assert (principal.role, principal.customers) == ("integration", frozenset({"C-汉中电力"}))

    listed = ticketctl("keys", "list")
    assert issued["id"] in listed.stdout and "zabbix" in listed.stdout and issued["key"] not in listed.stdout
    wrong = ticketctl("keys", "create", "--name", "x", "--role", "integration")
    assert wrong.returncode == 2 and "customers" in wrong.stderr

    assert ticketctl("keys", "revoke", issued["id"], "--reason", "leaked in a ticket").returncode == 0
    assert issued["id"] not in ticketctl("keys", "list").stdout
    assert issued["id"] in ticketctl("keys", "list", "--revoked").stdout
    with pytest.raises(Unauthenticated):
        asyncio.run(service.gate.keyring.authenticate(issued["key"]))
