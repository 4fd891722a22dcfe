"""Wiring in one place: settings → store → policy → desk → read models → API."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import FastAPI

from services.intake.access import Gate
from services.intake.app import create_app
from shared.clock import Clock, SystemClock
from shared.contracts import ContractBook
from shared.desk import TicketDesk
from shared.keys import record_admin_key
from shared.projections.contract_list import ContractListProjection
from shared.projections.key_list import KeyListProjection
from shared.projections.sla_compliance import SlaComplianceProjection
from shared.projections.ticket_list import TicketListProjection
from shared.read_db import read_engine
from shared.settings import Settings
from shared.sla.commitments import Commitments
from shared.sla.policy import Policy, load_policy
from shared.store import open_store
from shared.webhooks import Webhooks

CONTRACTS_FILE_ACTOR = {"kind": "service", "id": "contracts-file"}


@dataclass
class Intake:
    policy: Policy
    desk: TicketDesk
    contracts: ContractBook
    ticket_list: TicketListProjection
    contract_list: ContractListProjection
    sla_compliance: SlaComplianceProjection
    webhooks: Webhooks
    gate: Gate
    key_list: KeyListProjection
    app: FastAPI = field(init=False)

    def close(self) -> None:
        self.desk.store.close()
        self.ticket_list.engine.dispose()  # the contract list shares this engine


def intake(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ready: Callable[[], dict[str, bool]] = lambda: {},
) -> Intake:
    database_url = settings.resolved_database_url()
    clock = clock or SystemClock()
    store = open_store(database_url)
    engine = read_engine(database_url)
    policy = load_policy(settings.policy_file)
    contracts = ContractBook(store, clock, levels=policy.levels)
    if settings.contracts_file:
        contracts.load_file(settings.contracts_file, actor=CONTRACTS_FILE_ACTOR)
    parts = Intake(
        policy=policy,
        desk=TicketDesk(store, clock, settings.time_zone, Commitments(policy, contracts)),
        contracts=contracts,
        ticket_list=TicketListProjection(store, engine),
        contract_list=ContractListProjection(store, engine),
        sla_compliance=SlaComplianceProjection(store, engine, policy, settings.time_zone),
        webhooks=Webhooks.configure(settings, store, engine, clock),
        gate=Gate.configure(settings, store, clock),
        key_list=KeyListProjection(store, engine),
    )
    if settings.admin_key:
        record_admin_key(parts.gate.keyring, settings.admin_key.get_secret_value())
    parts.app = create_app(
        parts.desk, parts.ticket_list, policy, contracts, parts.contract_list, parts.sla_compliance, parts.webhooks,
        parts.gate, parts.key_list, max_body_bytes=settings.max_body_bytes, ready=ready,
        opentelemetry=settings.opentelemetry,
    )
    return parts
