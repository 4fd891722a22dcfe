"""Export and import: a store exported as CloudEvents JSON lines and imported into an
empty store of the other kind (SQLite ⇄ PostgreSQL) holds the same events in the
same order, every ticket replays to the same state, every hash is the same and the
chains verify; an import refuses a store that is not empty and a line it cannot
restore exactly."""
from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.desk import TicketDesk
from shared.integrity import verify_store
from shared.settings import ROOT, Settings
from shared.store import EventStore, open_store
from shared.transfer import ImportRefused, export, import_events
from tests.integration.test_projections import worked_tickets


@pytest.fixture
def service(database_url: str, clock: FakeClock) -> Iterator[Intake]:
    parts = intake(Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml"), clock=clock)
    yield parts
    parts.close()


@pytest.fixture
def other_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty store of the other kind than the test's own."""
    if database_url.startswith("sqlite"):
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'restored.sqlite'}"


@pytest.fixture
def restored(other_url: str) -> Iterator[EventStore]:
    store = open_store(other_url)
    yield store
    store.close()


def exported(store: EventStore, since: datetime | None = None) -> list[str]:
    out = io.StringIO()
    written = export(store, out, since)
    lines = out.getvalue().splitlines()
    assert written == len(lines)
    return lines


def without_positions(lines: list[str]) -> list[dict[str, object]]:
    return [{k: v for k, v in json.loads(line).items() if k != "position"} for line in lines]


def notifications(store: EventStore) -> list[tuple[str, object]]:
    """Every event in recorded order, as its class and attributes."""
    return [(n.topic, vars(store.decode(n))) for n in store.recorder.select_notifications(0, 100_000)]


def test_a_round_trip_restores_every_event_state_and_hash(
    service: Intake, clock: FakeClock, restored: EventStore
) -> None:
    tickets = worked_tickets(service, clock)
    source = service.desk.store
    lines = exported(source)
    assert import_events(restored, lines) == len(lines)

    assert notifications(restored) == notifications(source)  # same order, same values, same hashes
    for ticket in tickets.values():
        assert vars(restored.repository.get(ticket.id)) == vars(source.repository.get(ticket.id))
    verdict = verify_store(restored)
    assert verdict.intact and verdict.checked == verify_store(source).checked
    assert TicketDesk(restored, clock).get(tickets["late"].number).id == tickets["late"].id
    assert without_positions(exported(restored)) == without_positions(lines)  # positions are renumbered


def test_lines_are_cloud_events_and_carry_the_internal_ones(service: Intake, clock: FakeClock) -> None:
    worked_tickets(service, clock)
    events = [json.loads(line) for line in exported(service.desk.store)]
    assert {e["specversion"] for e in events} == {"1.0"}
    numbers = [e for e in events if e["type"] == "ticket_number.issued"]
    assert len(numbers) == 6 and all(e["internal"] for e in numbers)
    assert not any("internal" in e for e in events if e not in numbers)
    opened = next(e for e in events if e["type"] == "ticket.opened")
    assert opened["eventtopic"] == "shared.domain.ticket:Ticket.Opened"
    assert opened["originatortopic"] == "shared.domain.ticket:Ticket"
    since = datetime(2026, 11, 30, 16, 30, tzinfo=timezone.utc)  # the December ticket's receipt
    assert [e["type"] for e in map(json.loads, exported(service.desk.store, since))] == [
        "ticket.opened", "sla.committed", "ticket_number.issued"]


def test_import_refuses_a_store_that_is_not_empty(service: Intake, clock: FakeClock) -> None:
    worked_tickets(service, clock)
    store = service.desk.store
    before = store.recorder.max_notification_id()
    with pytest.raises(ImportRefused, match="already holds events"):
        import_events(store, exported(store))
    assert store.recorder.max_notification_id() == before


@pytest.mark.parametrize("spoil, problem", [
    (lambda lines: [line.replace("更换电源模块", "重启") for line in lines], "content altered"),
    (lambda lines: [line for line in lines if json.loads(line)["type"] != "ticket.acknowledged"], "an event is missing"),
    (lambda lines: [line.replace('"sequence": 1,', '"sequence": "one",') for line in lines], "line 1: originator_version"),
    (lambda lines: [line.replace("Contract.Registered", "Gone") for line in lines], "line 1: 'shared.domain.contract:Gone'"),
], ids=["edited", "removed", "mistyped", "unknown class"])
def test_import_refuses_a_line_it_cannot_restore_exactly(
    service: Intake, clock: FakeClock, restored: EventStore, spoil: Callable[[list[str]], list[str]], problem: str
) -> None:
    worked_tickets(service, clock)
    with pytest.raises(ImportRefused, match=problem):
        import_events(restored, spoil(exported(service.desk.store)))
    assert not restored.recorder.max_notification_id()  # the refused batch wrote nothing
