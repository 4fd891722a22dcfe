"""Dispatch as its users see it, on SQLite and PostgreSQL: the dispatch API (engineers,
spare units, stock, availability, engineers' actions) beside the intake API, with
the dispatcher reacting to every ticket event the way the worker does (here
without NATS: each event in store order, see `Reactions`)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi.testclient import TestClient  # synchronous: the dispatcher under test is synchronous too

from services.dispatch.wiring import Dispatch, dispatch
from shared.bootstrap import Intake, intake
from shared.clock import FakeClock
from shared.domain.ticket import Ticket
from shared.event_format import event_type
from shared.settings import ROOT, Settings
from tests.keys import bearer

TUESDAY_0200 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone(timedelta(hours=8)))
WEDNESDAY_1000 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone(timedelta(hours=8)))
OUTAGE = {"severity": "P1", "customer": "C-汉中电力", "contract": "K-2026-017", "site": {"city": "汉中"},
          "device": {"model": "S5700-28C-EI", "serial": "SN-001"}, "summary": "核心交换机宕机"}


class Reactions:
    """The dispatch worker without NATS: every ticket event recorded since the last run,
    in store order (as the relay publishes them), until nothing new is recorded."""

    def __init__(self, parts: Dispatch) -> None:
        self.parts = parts
        self.position = 0

    def run(self) -> list[str]:
        store, done = self.parts.tickets.store, []
        while batch := store.recorder.select_notifications(self.position, 100, inclusive_of_start=False):
            for notification in batch:
                self.position = notification.id
                event = store.decode(notification)
                if isinstance(event, Ticket.Event):
                    done.append(self.parts.dispatcher.react(event.originator_id, event.originator_version,
                                                            event_type(event), event.correlation_id))
        return done


@dataclass
class Service:
    intake: Intake
    dispatch: Dispatch
    api: httpx.Client
    dispatch_api: httpx.Client
    reactions: Reactions
    clock: FakeClock

    def open(self, **changes: object) -> dict:
        ticket = self.api.post("/v1/tickets", json=OUTAGE | changes).json()
        self.reactions.run()
        return ticket

    def staffing(self, ticket: dict) -> dict:
        return self.dispatch_api.get(f"/v1/tickets/{ticket['id']}/dispatch").json()

    def history(self, ticket: dict, *types: str) -> list[dict]:
        events = self.api.get(f"/v1/tickets/{ticket['id']}/events").json()
        return [e for e in events if not types or e["type"] in types]


@pytest.fixture
def service(database_url: str) -> Iterator[Service]:
    clock = FakeClock(TUESDAY_0200)
    settings = Settings(database_url=database_url, contracts_file=ROOT / "deploy" / "contracts.toml")
    front, back = intake(settings, clock=clock), dispatch(settings, clock=clock)
    admin = bearer(front.gate.keyring, "admin", "ops")
    api = TestClient(front.app, base_url="http://intake", headers=admin)
    dispatch_api = TestClient(back.app, base_url="http://dispatch", headers=admin)
    yield Service(front, back, api, dispatch_api, Reactions(back), clock)
    api.close()
    dispatch_api.close()
    back.close()
    front.close()


def events_recorded(service: Service) -> int:
    return service.dispatch.tickets.store.recorder.max_notification_id() or 0


# -- engineers and spare units ----------------------------------------------------------


def test_the_files_load_once_and_the_api_registers_and_amends(service: Service, database_url: str) -> None:
    recorded = events_recorded(service)
    again = dispatch(Settings(database_url=database_url), clock=service.clock)
    again.close()
    assert events_recorded(service) == recorded  # loading the same files again records nothing

    profile = {"name": "乔峰", "branch": "商洛", "level": "L2", "skills": ["network"], "hours": "cn-business",
               "on_call": ["tue"], "max_tickets": 2}
    created = service.dispatch_api.put("/v1/engineers/E-040", json=profile)
    assert (created.status_code, created.headers["Location"]) == (201, "/v1/engineers/E-040")
    assert (created.json()["region"], created.json()["duty_now"]) == ("陕南", None)  # on call Tuesdays, from 09:00
    assert service.dispatch_api.put("/v1/engineers/E-040", json=profile).status_code == 200
    assert events_recorded(service) == recorded + 1  # an unchanged PUT records nothing
    amended = service.dispatch_api.put("/v1/engineers/E-040", json=profile | {"max_tickets": 4}).json()
    assert (amended["max_tickets"], amended["version"]) == (4, 2)

    bad = service.dispatch_api.put("/v1/engineers/E-041", json=profile | {"branch": "北京"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "branch"
    assert service.dispatch_api.put("/v1/engineers/E-041", json=profile | {"level": "L9"}).status_code == 422
    missing = service.dispatch_api.get("/v1/engineers/E-999")
    assert (missing.status_code, missing.json()["type"]) == (404, "/problems/engineer-not-found")

    unit = service.dispatch_api.put("/v1/spare-units/SP-SL-001", json={"serial": "SN-9", "model": "S5700-28C-EI", "warehouse": "WH-XA"})
    assert unit.status_code == 201 and unit.json()["state"] == "available"
    wrong = service.dispatch_api.put("/v1/spare-units/SP-SL-002", json={"serial": "SN-9", "model": "X", "warehouse": "WH-BJ"})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "warehouse"


def test_lists_and_who_can_take_a_p1_in_hanzhong_right_now(service: Service) -> None:
    listed = service.dispatch_api.get("/v1/engineers", params={"region": "陕南", "level": "L2", "skill": "network"}).json()
    assert [e["id"] for e in listed["engineers"]] == ["E-013", "E-015", "E-017", "E-020", "E-023"]
    available = service.dispatch_api.get("/v1/availability", params={
        "city": "汉中", "severity": "P1", "service_level": "premium", "model": "S5700-28C-EI"}).json()
    assert [e["id"] for e in available["engineers"]] == ["E-013", "E-019", "E-020", "E-005", "E-002"]
    assert available["engineers"][0]["rules"] == ["same city (汉中)", "skill network", "level L2 (needs L2)",
                                                  "on call (mon duty)", "carries 0 of 3"]
    assert available["rejected"] == {"off duty": 11, "below L2": 7, "inactive": 1}
    assert (available["required_level"], available["skill"]) == ("L2", "network")
    e013 = service.dispatch_api.get("/v1/engineers/E-013").json()
    assert (e013["duty_now"], e013["region"], e013["load"]) == ("on call (mon duty)", "陕南", 0)


def test_stock_by_model_and_warehouse(service: Service) -> None:
    stock = service.dispatch_api.get("/v1/stock", params={"model": "S5700-28C-EI"}).json()["stock"]
    assert {(s["warehouse"], s["available"]) for s in stock} == {("WH-AK", 1), ("WH-HZ", 2), ("WH-XA", 3), ("WH-YL", 2)}
    units = service.dispatch_api.get("/v1/spare-units", params={"warehouse": "WH-HZ", "state": "available"}).json()
    assert units["total"] == 6


# -- automatic dispatch -------------------------------------------------------------------


def test_a_p1_at_night_goes_to_the_on_call_engineer_and_a_decline_to_the_next(service: Service) -> None:
    ticket = service.open()
    assigned = service.history(ticket, "ticket.engineer_assigned")
    assert [e["data"]["engineer"] for e in assigned] == ["E-013"]
    assert assigned[0]["data"]["rules"] == ["same city (汉中)", "skill network", "level L2 (needs L2)", "on call (mon duty)",
                                            "carries 0 of 3"]
    assert assigned[0]["actor"] == {"kind": "service", "id": "dispatch"}
    assert service.dispatch_api.get("/v1/engineers/E-013").json()["tickets"] == [{"id": ticket["id"], "number": ticket["number"]}]

    declined = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/decline", json={"engineer": "E-013", "reason": "车辆故障"})
    assert declined.json()["lead"] is None and declined.json()["excluded"] == ["E-013"]
    assert service.dispatch_api.get("/v1/engineers/E-013").json()["load"] == 0
    service.reactions.run()
    staffing = service.staffing(ticket)
    assert staffing["lead"] == "E-019"

    engineer = bearer(service.intake.gate.keyring, "engineer", engineer="E-019")
    impostor = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/accept", json={"engineer": "E-013"}, headers=engineer)
    assert (impostor.status_code, impostor.json()["type"]) == (403, "/problems/forbidden")  # E-019 acts as E-019 only
    outsider = bearer(service.intake.gate.keyring, "engineer", engineer="E-005")
    unseen = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/accept", json={"engineer": "E-005"}, headers=outsider)
    assert (unseen.status_code, unseen.json()["type"]) == (404, "/problems/ticket-not-found")  # not on it: not there
    for path, body in [("accept", {}), ("depart", {"eta": "40 分钟"})]:
        assert service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/{path}", json={"engineer": "E-019"} | body, headers=engineer).status_code == 200
    service.api.post(f"/v1/tickets/{ticket['id']}/acknowledge", json={"plan": "已出发"}, headers=engineer)
    service.clock.advance(minutes=50)
    arrived = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/arrive", json={"engineer": "E-019"}, headers=engineer)
    assert arrived.json()["status"] == "on_site"
    on_site = next(t for t in service.api.get(f"/v1/tickets/{ticket['id']}").json()["sla"]["targets"] if t["target"] == "on_site")
    assert on_site["state"] == "met"
    stranger = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/arrive", json={"engineer": "E-005"})
    assert (stranger.status_code, stranger.json()["type"]) == (409, "/problems/not-on-ticket")

    assert [e["type"] for e in service.history(ticket)][2:] == [
        "ticket.engineer_assigned", "ticket.assignment_declined", "ticket.engineer_assigned", "ticket.assignment_accepted",
        "ticket.engineer_departed", "ticket.acknowledged", "ticket.engineer_arrived",
    ]


def test_a_handed_back_ticket_is_reassigned_and_a_reopened_one_carried_again(service: Service) -> None:
    ticket = service.open()
    service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/accept", json={"engineer": "E-013"})
    handed = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/hand-back", json={"engineer": "E-013", "reason": "另有急单"})
    assert handed.json()["excluded"] == ["E-013"]
    service.reactions.run()
    assert service.staffing(ticket)["lead"] == "E-019"
    for path, body in [("acknowledge", {"plan": "p"}), ("resolve", {"resolution": "r"})]:
        service.api.post(f"/v1/tickets/{ticket['id']}/{path}", json=body)
    service.reactions.run()
    assert service.dispatch_api.get("/v1/engineers/E-019").json()["load"] == 0

    service.dispatch_api.put("/v1/engineers/E-019", json={  # meanwhile E-019 went on leave
        "name": "韩冰", "branch": "汉中", "level": "L2", "skills": ["database", "erp"], "hours": "cn-business",
        "on_call": ["mon", "wed", "fri"], "max_tickets": 3, "active": False})
    service.api.post(f"/v1/tickets/{ticket['id']}/reopen", json={"reason": "故障复现"})
    service.reactions.run()
    staffing = service.staffing(ticket)
    assert (staffing["lead"], staffing["excluded"]) == ("E-020", ["E-013", "E-019"])
    handed_back = service.history(ticket, "ticket.engineer_handed_back")[-1]
    assert handed_back["data"]["reason"] == "reopened, but E-019 is not active"
    assert service.dispatch_api.get("/v1/engineers/E-020").json()["load"] == 1


def test_reacting_again_to_every_event_records_nothing(service: Service) -> None:
    ticket = service.open()
    service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/decline", json={"engineer": "E-013", "reason": "x"})
    service.reactions.run()
    recorded = events_recorded(service)
    service.reactions.position = 0  # JetStream delivering everything again
    assert all(done in ("nothing to do", "ticket is active again") or "already applied" in done
               for done in service.reactions.run())
    assert events_recorded(service) == recorded


def test_escalations_add_a_senior_hand_over_to_the_advisory_centre_and_convene_a_panel(service: Service) -> None:
    service.clock.set(WEDNESDAY_1000)
    ticket = service.open()
    assert service.staffing(ticket)["lead"] == "E-013"
    service.api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L2", "reason": "需要高级工程师"})
    service.reactions.run()
    assert [(e["engineer"], e["role"]) for e in service.staffing(ticket)["engineers"]] == [("E-013", "lead"), ("E-015", "support")]
    service.api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L3", "reason": "疑似固件缺陷"})
    service.reactions.run()
    staffing = service.staffing(ticket)
    assert staffing["lead"] == "E-001"  # the head office's R&D: the advisory centre answers directly
    assert [(e["engineer"], e["role"], e["level"]) for e in staffing["engineers"]][-1] == ("E-001", "lead", "L3")
    service.api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L4", "reason": "重大故障,专家会诊"})
    service.reactions.run()
    panel = [e for e in service.staffing(ticket)["engineers"] if e["role"] == "panel"]
    assert [(e["engineer"], e["level"]) for e in panel] == [("E-003", "L3"), ("E-004", "L3"), ("E-002", "L3")]
    reasons = [e["data"]["reason"] for e in service.history(ticket, "ticket.engineer_assigned")]
    assert reasons[-1].startswith("panel 3 of 3: E-002")


def test_a_complaint_sends_someone_else_at_least_as_senior(service: Service) -> None:
    service.clock.set(WEDNESDAY_1000)
    ticket = service.open(severity="P3")
    assert service.staffing(ticket)["engineers"][0]["engineer"] == "E-018"  # L1 with the skill: P3 needs no more
    customer = bearer(service.intake.gate.keyring, "integration", "hz-power-portal", customers=(ticket["customer"],))
    complaint = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/complaint", json={"reason": "工程师态度差"},
                                          headers=customer)
    assert complaint.json()["excluded"] == ["E-018"]
    service.reactions.run()
    assert service.staffing(ticket)["lead"] == "E-013"  # at least L1; the skill comes before the lowest level

    # A manual escalation whose reason is a complaint (seed 003) does the same, and staffs the rung.
    service.api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L2", "reason": "客户投诉: 工程师未按时到场"})
    service.reactions.run()
    staffing = service.staffing(ticket)
    assert staffing["excluded"] == ["E-013", "E-018"]
    assert [(e["engineer"], e["level"], e["role"], e["for_level"]) for e in staffing["engineers"]] == [("E-015", "L2", "lead", "L2")]
    complaints = service.history(ticket, "ticket.engineer_complaint")
    assert [(e["data"]["engineer"], e["actor"]["kind"]) for e in complaints] == [("E-018", "client"), ("E-013", "service")]


def test_a_complaint_escalation_followed_by_another_before_dispatch_reacts_still_counts(service: Service) -> None:
    # Dispatch reacts to each escalation by its own trigger and reason, not the latest one's.
    service.clock.set(WEDNESDAY_1000)
    ticket = service.open(severity="P3")
    assert service.staffing(ticket)["lead"] == "E-018"
    service.api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L2", "reason": "客户投诉: 工程师未按时到场"})
    service.api.post(f"/v1/tickets/{ticket['id']}/escalate", json={"level": "L3", "reason": "outage spreads"})
    service.reactions.run()
    complaints = service.history(ticket, "ticket.engineer_complaint")
    assert [(e["data"]["engineer"], e["actor"]["kind"]) for e in complaints] == [("E-018", "service")]
    assert "E-018" in service.staffing(ticket)["excluded"]


def test_resolved_or_cancelled_frees_capacity_and_unshipped_units(service: Service) -> None:
    first, second = service.open(), service.open(device={"model": "S5700-28C-EI"}, severity="P2")
    assert service.dispatch_api.get("/v1/engineers/E-013").json()["load"] == 2
    reserved = service.dispatch_api.post(f"/v1/tickets/{second['id']}/spare-request",
                                         json={"engineer": "E-013", "reason": "主控板故障"}).json()["reserved"]
    service.api.post(f"/v1/tickets/{first['id']}/acknowledge", json={"plan": "p"})
    service.api.post(f"/v1/tickets/{first['id']}/resolve", json={"resolution": "重启恢复"})
    service.api.post(f"/v1/tickets/{second['id']}/cancel", json={"reason": "客户自行恢复"})
    service.reactions.run()
    assert service.dispatch_api.get("/v1/engineers/E-013").json()["load"] == 0
    assert service.dispatch_api.get(f"/v1/spare-units/{reserved}").json()["state"] == "available"
    assert service.history(second, "ticket.spare_reservation_released")[0]["data"]["reason"].endswith("cancelled")


def test_nobody_fits_is_recorded_with_why_and_escalated(service: Service) -> None:
    ticket = service.open(site={"city": "延安"})
    for engineer in ("E-030", "E-005", "E-002"):  # 陕北's on-call, then the head office's
        assert service.staffing(ticket)["lead"] == engineer
        service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/decline", json={"engineer": engineer, "reason": "在途"})
        service.reactions.run()
    nobody = service.history(ticket, "ticket.no_engineer_available")
    assert [e["data"]["next_step"].split(":")[0] for e in nobody] == ["escalated to L2", "already at L2"]
    assert nobody[0]["data"]["rejected"]["excluded from this ticket"] == 3
    escalated = service.history(ticket, "ticket.escalated")
    assert [(e["data"]["level"], e["data"]["trigger"]) for e in escalated] == [("L2", "dispatch:no_engineer")]


def test_the_dedicated_engineer_first_and_a_5x8_ticket_at_night(service: Service) -> None:
    service.clock.set(WEDNESDAY_1000)
    vip = service.open(customer="西安城市燃气集团", contract="K-XA-2026-001", site={"city": "西安"})
    assert "dedicated engineer (专人专线)" in service.history(vip, "ticket.engineer_assigned")[0]["data"]["rules"]
    service.clock.set(TUESDAY_0200)
    standard = service.open(customer="西安公交集团", contract="K-XA-2026-008", site={"city": "西安"}, severity="P2")
    assigned = service.history(standard, "ticket.engineer_assigned")[0]["data"]
    assert assigned["engineer"] == "E-005" and "at work" in assigned["rules"]
    assert assigned["reason"].endswith("on duty when they resume at 2026-11-24 09:00")


# -- spare units --------------------------------------------------------------------------


def test_a_spare_unit_reserved_shipped_installed_returned(service: Service) -> None:
    ticket = service.open()
    lead = service.staffing(ticket)["lead"]
    p4 = service.open(severity="P4")
    refused = service.dispatch_api.post(f"/v1/tickets/{p4['id']}/spare-request",
                                        json={"engineer": service.staffing(p4)["lead"], "reason": "x"})
    assert (refused.status_code, refused.json()["type"]) == (409, "/problems/spare-not-allowed")

    reservation = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/spare-request",
                                            json={"engineer": lead, "reason": "主控板烧毁,现场替换"}).json()
    assert (reservation["reserved"], reservation["distance_km"]) == ("SP-HZ-001", 0.0)
    unit = reservation["reserved"]
    steps = [("ship", {"reference": "同城专送"}), ("install", {})]
    for step, body in steps:
        assert service.dispatch_api.post(f"/v1/spare-units/{unit}/{step}", json=body).status_code == 200
    loaned = service.dispatch_api.get(f"/v1/spare-units/{unit}").json()
    assert (loaned["state"], loaned["ticket_number"]) == ("installed", ticket["number"])
    assert loaned["return_by"] == "2026-12-01T01:00:00Z"  # five working days on cn-business
    refused = service.api.post(f"/v1/tickets/{ticket['id']}/cancel", json={"reason": "客户撤单"})
    assert (refused.status_code, refused.json()["type"]) == (409, "/problems/loan-outstanding")

    for path, body in [("acknowledge", {"plan": "p"}), ("resolve", {"resolution": "替换后恢复"})]:
        service.api.post(f"/v1/tickets/{ticket['id']}/{path}", json=body)
    refused = service.api.post(f"/v1/tickets/{ticket['id']}/close", json={"note": "x"})
    assert (refused.status_code, refused.json()["type"]) == (409, "/problems/loan-outstanding")
    assert service.dispatch_api.post(f"/v1/spare-units/{unit}/return", json={"note": "客户设备修复"}).json()["state"] == "returned"
    assert service.api.post(f"/v1/tickets/{ticket['id']}/close", json={"note": "x"}).json()["status"] == "closed"
    assert service.dispatch_api.post(f"/v1/spare-units/{unit}/restock", json={}).json()["state"] == "available"
    again = service.dispatch_api.post(f"/v1/spare-units/{unit}/restock", json={})
    assert (again.status_code, again.json()["type"]) == (409, "/problems/illegal-unit-transition")

    spare_types = [e["type"] for e in service.history(ticket) if e["type"].startswith("ticket.spare")]
    assert spare_types == ["ticket.spare_unit_reserved", "ticket.spare_unit_shipped", "ticket.spare_unit_installed",
                           "ticket.spare_unit_returned"]
    report = service.api.get(f"/v1/tickets/{ticket['id']}/report").json()
    assert [(u["unit"], u["warehouse"], u["outcome"]) for u in report["spare_units"]] == [(unit, "WH-HZ", "returned")]
    assert report["spare_units"][0]["installed_at"] is not None
    assert report["assigned"][0] == {"engineer": lead, "role": "lead", "level": report["assigned"][0]["level"]}
    markdown = service.api.get(f"/v1/tickets/{ticket['id']}/report", params={"format": "markdown"}).text
    assert f"- Spare units: {unit} (" in markdown and "returned" in markdown and f"{lead} (lead, " in markdown
    unit_stream = list(service.dispatch.tickets.store.events.get(service.dispatch.stock.get(unit).id))
    assert [type(e).__name__ for e in unit_stream] == ["Registered", "Reserved", "Shipped", "Installed", "Returned", "Restocked"]


def test_a_loan_converted_lets_the_ticket_close(service: Service) -> None:
    ticket = service.open()
    unit = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/spare-request",
                                     json={"engineer": "E-013", "reason": "r"}).json()["reserved"]
    for step in ("ship", "install"):
        service.dispatch_api.post(f"/v1/spare-units/{unit}/{step}", json={})
    assert service.dispatch_api.post(f"/v1/spare-units/{unit}/convert", json={"how": "sold", "note": "客户买下"}).json()["state"] == "retired"
    for path, body in [("acknowledge", {"plan": "p"}), ("resolve", {"resolution": "r"}), ("close", {"note": "n"})]:
        assert service.api.post(f"/v1/tickets/{ticket['id']}/{path}", json=body).status_code == 200


def test_an_overdue_loan_is_visible_and_raised_once(service: Service) -> None:
    ticket = service.open()
    unit = service.dispatch_api.post(f"/v1/tickets/{ticket['id']}/spare-request",
                                     json={"engineer": "E-013", "reason": "advance replacement"}).json()["reserved"]
    service.dispatch_api.post(f"/v1/spare-units/{unit}/ship", json={})
    service.dispatch_api.post(f"/v1/spare-units/{unit}/install", json={"return_by": "2026-11-26T18:00:00+08:00"})
    assert service.dispatch.spares.flag_overdue() == 0
    service.clock.set(datetime(2026, 11, 26, 18, 0, 1, tzinfo=timezone(timedelta(hours=8))))
    assert service.dispatch.spares.flag_overdue() == 1
    assert service.dispatch.spares.flag_overdue() == 0
    overdue = service.dispatch_api.get("/v1/spare-units", params={"overdue": True}).json()["spare_units"]
    assert [u["id"] for u in overdue] == [unit]
    assert service.staffing(ticket)["overdue_units"] == [unit]
    raised = service.history(ticket, "ticket.spare_return_overdue")
    assert [e["data"]["return_by"] for e in raised] == ["2026-11-26T10:00:00Z"]


def test_a_resolution_breach_on_a_p1_fault_lends_a_unit_and_convenes_the_panel(service: Service) -> None:
    service.clock.set(WEDNESDAY_1000)
    ticket = service.open()
    service.intake.desk.act(ticket["id"], "escalate", expected_version=None, actor={"kind": "service", "id": "sla_clock"},
                            correlation_id="breach", level="L4", reason="resolution target breached", trigger="breach:resolution")
    service.reactions.run()
    staffing = service.staffing(ticket)
    assert staffing["spare_units"] == ["SP-HZ-001"]
    assert len([e for e in staffing["engineers"] if e["role"] == "panel"]) == 3


def test_history_names_what_caused_each_event(service: Service) -> None:
    ticket = service.open(severity="P3")
    changed = service.api.post(f"/v1/tickets/{ticket['id']}/severity", json={"severity": "P2", "reason": "影响扩大"})
    assert changed.status_code == 200
    history = service.history(ticket)
    ids = {e["version"]: e["id"] for e in history}
    caused = {(e["type"], e["version"]): e["causation_id"] for e in history}
    assert caused[("ticket.opened", 1)] is None  # a request
    assert caused[("sla.committed", 2)] == ids[1]  # saved with the opening
    assigned = next(e for e in history if e["type"] == "ticket.engineer_assigned")
    assert assigned["causation_id"] == ids[1]  # dispatch reacted to ticket.opened
    change = next(e for e in history if e["type"] == "ticket.severity_changed")
    assert caused[("sla.committed", change["version"] + 1)] == change["id"]
